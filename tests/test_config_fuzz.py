"""Config fuzzing: random YAML documents and `--set` overrides either give a valid Config or a one-line ConfigError.

Bounded (a few hundred examples in all, derandomized) so it runs in seconds and the same way every time.
"""

import dataclasses
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchlingo.config import GROUPS, Config
from torchlingo.errors import ConfigError

FIELDS = [f.name for f in dataclasses.fields(Config)]
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # no lone surrogates: a file holds UTF-8

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-3, max_value=3000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1),
    TEXT,
    st.sampled_from(
        [
            "cosine",
            "plateau",
            "noam",
            "word",
            "sentencepiece",
            "skip",
            "error",
            "bf16",
            "auto",
            "cpu",
            "1e-4",
            "nan",
            "inf",
            "-1",
            "0",
            "yes",
            "on",
            "null",
            "~",
            "",
            " ",
            "\n",
            "1_000",
        ]
    ),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6
)
keys = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(GROUPS),
    TEXT,
    st.integers(),
    st.sampled_from(
        [
            "learning_rat",
            "batchsize",
            "data.batch_size",
            "Training",
            "run_dir",
            "__class__",
            "self",
            "a\nb",
            "seed\n",
            "seed\r",
            "x\u2028y",
        ]
    ),
)
flat_docs = st.dictionaries(keys, values, max_size=6)
grouped_docs = st.dictionaries(st.sampled_from(GROUPS), st.one_of(st.none(), flat_docs, values), max_size=5)
documents = st.one_of(flat_docs, grouped_docs, values)


def assert_valid_or_one_line_error(build) -> None:
    try:
        config = build()
    except ConfigError as e:
        message = str(e)
        assert len(message.splitlines()) == 1, repr(message)  # also no \r, \u2028, \x1c ... inside
        return
    assert isinstance(config, Config)
    Config.from_dict(config.to_dict())  # a config that loaded also round-trips through its own YAML form
    assert Config.from_dict(yaml.safe_load(config.to_yaml())) == config


@FUZZ
@given(documents)
def test_from_dict(doc):
    assert_valid_or_one_line_error(lambda: Config.from_dict(doc))


@FUZZ
@given(documents)
def test_from_yaml_of_dumped_documents(doc):
    text = yaml.safe_dump(doc, allow_unicode=True) if not isinstance(doc, float) or doc == doc else ".nan"
    assert_valid_or_one_line_error(lambda: from_yaml_text(text))


@FUZZ
@given(st.one_of(TEXT, st.text(st.sampled_from(list("{}[]:-,#&*!|>'\"%@` \n\tab12.=?")), max_size=60)))
def test_from_yaml_of_random_text(text):
    assert_valid_or_one_line_error(lambda: from_yaml_text(text))


override_keys = st.one_of(
    st.sampled_from(FIELDS),
    st.builds(lambda g, f: f"{g}.{f}", st.sampled_from(GROUPS + ("x",)), st.sampled_from(FIELDS)),
    TEXT,
)
override_values = st.one_of(
    TEXT,
    st.sampled_from(
        [
            "1",
            "1e-3",
            "[1, 2]",
            "{a: 1}",
            "[",
            "!!python/object:os.system",
            "!!float abc",
            "!!int x",
            "&a [*a]",
            "null",
            "true",
            "'x",
            "2**8",
        ]
    ),
)
overrides = st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", override_keys, override_values), TEXT), max_size=4)


@FUZZ
@given(st.one_of(st.none(), flat_docs), overrides)
def test_overrides(doc, items):
    assert_valid_or_one_line_error(lambda: Config.from_dict(doc, overrides=items))


def from_yaml_text(text: str) -> Config:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_text(text, encoding="utf-8")
        return Config.from_yaml(path, overrides=None)


def test_known_bad_documents_are_one_line_errors(tmp_path):
    """Cases the fuzzer found once, kept as plain regression tests."""
    cases = [
        "a: [" + "[" * 2000,
        '"multi\\nline": 1',
        'data: {"seed\\n": 1}',
        "? [a, b]\n: 1",
        "!!python/object/apply:os.system ['true']",
        "seed: 100000000000000000000000",
        "learning_rate: !!float abc",
    ]
    for n, text in enumerate(cases):
        path = tmp_path / f"c{n}.yaml"
        path.write_text(text)
        assert_valid_or_one_line_error(lambda path=path: Config.from_yaml(path))
