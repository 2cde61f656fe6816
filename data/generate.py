"""Generate torchlingo's small English->Spanish parallel corpus from a toy grammar.

The grammar covers gender/number agreement of articles, determiners and
adjectives, adjective-after-noun reordering, present-tense conjugation
(regular -ar/-er/-ir and some irregular verbs), negation, yes/no and wh-questions
with inversion, "ser"/"estar", "hay", possessives ("the boy's dog" -> "el perro
del niño"), the personal "a" and the contractions "del"/"al". Every English
sentence has exactly one Spanish translation, so the data is fully learnable.

    python data/generate.py --seed 0 --out data

The vocabulary lives in the sibling module ``lexicon.py`` (importable because a
script's own folder is first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

from lexicon import (
    ADJS,
    DETS,
    FREQ,
    LOCATIVE,
    MASS_DETS,
    NOUNS,
    PL_DETS,
    POSSESSIVE,
    PREPS,
    PRONOUNS,
    SG_DETS,
    TIMES,
    VERBS,
    Adj,
    Noun,
    Verb,
    conjugate,
)

# ------------------------------------------------------------- realisation


@dataclass(frozen=True)
class NP:
    """A noun phrase: determiner, optional (very +) adjective, optional possessor."""

    noun: Noun
    plural: bool = False
    det: str = "the"
    adj: Adj | None = None
    very: bool = False
    owner: NP | None = None


Subject = NP | tuple  # a noun phrase or one of PRONOUNS


def np_en(np: NP) -> list[str]:
    """English words: [det | owner's] [very] [adj] noun, with a/an chosen by sound."""
    words = possessive_en(np.owner) if np.owner else [np.det] if np.det else []
    words += (["very"] if np.very else []) + ([np.adj.en] if np.adj else [])
    words.append(np.noun.en_pl if np.plural else np.noun.en)
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return words


def possessive_en(owner: NP) -> list[str]:
    """ "the boy's", "the boys'", "the men's", "Maria's"."""
    words = np_en(owner)
    words[-1] += "'" if owner.plural and words[-1].endswith("s") else "'s"
    return words


def np_es(np: NP) -> list[str]:
    """Spanish words: det noun [muy] [adj] [de owner], all agreeing with the noun."""
    noun, det = np.noun, "the" if np.owner else np.det
    el_fem = noun.el_fem and det == "the" and not np.plural  # "el agua", but "las aguas"
    art = DETS[det][2 * np.plural + (noun.fem and not el_fem)]
    if art is None:
        raise ValueError(f"determiner {det!r} does not fit {noun.en!r} (plural={np.plural})")
    words = ([art] if art else []) + [noun.es_pl if np.plural else noun.es]
    words += (["muy"] if np.very else []) + ([np.adj.form(noun.fem, np.plural)] if np.adj else [])
    return words + (["de"] + np_es(np.owner) if np.owner else [])


def subject_parts(subj: Subject) -> tuple[list[str], list[str], int, bool, bool]:
    """(English words, Spanish words, person, feminine, plural) of a subject."""
    if isinstance(subj, NP):
        return np_en(subj), np_es(subj), 4 if subj.plural else 2, subj.noun.fem, subj.plural
    en, es, person, fem, plural = subj
    return [en], [es], person, fem, plural


def object_es(np: NP) -> list[str]:
    """Spanish object, with the personal "a" before people."""
    return (["a"] if "P" in np.noun.tags else []) + np_es(np)


def pp_parts(prep: str, np: NP) -> tuple[list[str], list[str]]:
    """A prepositional phrase in both languages."""
    return prep.split() + np_en(np), PREPS[prep][0].split() + np_es(np)


def contract(words: list[str]) -> list[str]:
    """Spanish contractions: "de el" -> "del", "a el" -> "al" (never "de él")."""
    out: list[str] = []
    for word in words:
        if word == "el" and out and out[-1] in ("de", "a"):
            out[-1] += "l"
        else:
            out.append(word)
    return out


def finish(en: list[str], es: list[str], question: bool) -> tuple[str, str]:
    """Contract, capitalise and punctuate both sentences."""
    en_s, es_s = " ".join(en), " ".join(contract(es))
    en_s, es_s = en_s[0].upper() + en_s[1:], es_s[0].upper() + es_s[1:]
    return (en_s + "?", "¿" + es_s + "?") if question else (en_s + ".", es_s + ".")


def clause(
    subj: Subject,
    verb: Verb,
    obj: NP | None = None,
    pp: tuple[str, NP] | None = None,
    neg: bool = False,
    question: bool = False,
    freq: tuple | None = None,
    time: tuple | None = None,
) -> tuple[str, str]:
    """A verbal sentence: statement (optionally negated or with a frequency adverb) or
    yes/no question with do-support in English and verb-subject inversion in Spanish."""
    s_en, s_es, person, _, _ = subject_parts(subj)
    v_es = conjugate(verb.es, person)
    rest_en, rest_es = (np_en(obj), object_es(obj)) if obj else ([], [])
    if pp:
        p_en, p_es = pp_parts(*pp)
        rest_en, rest_es = rest_en + p_en, rest_es + p_es
    if time:
        rest_en, rest_es = rest_en + time[0].split(), rest_es + time[1].split()
    do = "does" if person == 2 else "do"
    if question:
        return finish([do] + s_en + [verb.en] + rest_en, [v_es] + s_es + rest_es, True)
    v_en = [do, "not", verb.en] if neg else [verb.en3 if person == 2 else verb.en]
    adv_en, adv_es = (freq[0].split(), freq[1].split()) if freq else ([], [])
    return finish(s_en + adv_en + v_en + rest_en, s_es + adv_es + ["no"] * neg + [v_es] + rest_es, False)


def copula(subj: Subject, adj: Adj, very: bool = False, neg: bool = False, question: bool = False) -> tuple[str, str]:
    """ "The house is (not) very big." with ser/estar chosen by the adjective, agreeing."""
    s_en, s_es, person, fem, plural = subject_parts(subj)
    be_en = ("am", "are", "is", "are", "are")[person]
    be_es = conjugate("estar" if adj.estar else "ser", person)
    a_en, a_es = ["very"] * very + [adj.en], ["muy"] * very + [adj.form(fem, plural)]
    if question:
        return finish([be_en] + s_en + a_en, [be_es] + s_es + a_es, True)
    return finish(s_en + [be_en] + ["not"] * neg + a_en, s_es + ["no"] * neg + [be_es] + a_es, False)


def there_is(np: NP, pp: tuple[str, NP], question: bool = False) -> tuple[str, str]:
    """ "There are two cats under the table." -> "Hay dos gatos debajo de la mesa.\""""
    p_en, p_es = pp_parts(*pp)
    be = "are" if np.plural else "is"
    en = [be, "there"] if question else ["there", be]
    return finish(en + np_en(np) + p_en, ["hay"] + np_es(np) + p_es, question)


def wh_question(subj: Subject, verb: Verb | None = None, time: tuple | None = None) -> tuple[str, str]:
    """ "Where does he work?" / "What do you eat?" / "Where is the cat?" (verb None)."""
    s_en, s_es, person, _, _ = subject_parts(subj)
    if verb is None:
        be_en = ("am", "are", "is", "are", "are")[person]
        return finish(["where", be_en] + s_en, ["dónde", conjugate("estar", person)] + s_es, True)
    t_en, t_es = (time[0].split(), time[1].split()) if time else ([], [])
    wh_en, wh_es = ("what", "qué") if verb.objects else ("where", "dónde")
    do = "does" if person == 2 else "do"
    return finish([wh_en, do] + s_en + [verb.en] + t_en, [wh_es, conjugate(verb.es, person)] + s_es + t_es, True)


# ---------------------------------------------------------------- sampling


def random_np(rng: random.Random, tags: str, owner_ok: bool = True) -> NP:
    """A random noun phrase whose noun has one of ``tags``."""
    noun = rng.choice([n for n in NOUNS if any(t in n.tags for t in tags)])
    if noun.name:
        return NP(noun, det="")
    plural = not noun.mass and rng.random() < 0.45
    det = rng.choice(MASS_DETS if noun.mass else PL_DETS if plural else SG_DETS)
    fitting = [a for a in ADJS if any(t in noun.tags for t in a.tags)]
    adj = rng.choice(fitting) if fitting and rng.random() < 0.3 else None
    very = adj is not None and rng.random() < 0.15
    owner = None
    if owner_ok and det == "the" and not noun.mass and rng.random() < 0.15:
        owner = random_np(rng, "P", owner_ok=False)
        owner = NP(owner.noun, owner.plural, owner.det if owner.det in POSSESSIVE or owner.noun.name else "the")
    return NP(noun, plural, det, adj, very, owner)


def random_subject(rng: random.Random, tags: str) -> Subject:
    """A pronoun (people only) or a noun phrase; bare nouns get "the" (Spanish needs it)."""
    if "P" in tags and rng.random() < 0.5:
        return rng.choice(PRONOUNS)
    np = random_np(rng, tags)
    return NP(np.noun, np.plural, "the", np.adj, np.very, np.owner) if not (np.det or np.noun.name) else np


def random_pp(rng: random.Random, preps: tuple[str, ...]) -> tuple[str, NP]:
    """A prepositional phrase with one of ``preps`` and a fitting noun."""
    prep = rng.choice(preps)
    return prep, random_np(rng, PREPS[prep][1], owner_ok=prep == "with")


def random_sentence(rng: random.Random) -> tuple[str, str]:
    """One sentence pair from a weighted mix of constructions."""
    kind = rng.choices(["verb", "copula", "there", "wh"], weights=[62, 16, 10, 12])[0]
    if kind == "copula":
        adj = rng.choice(ADJS)
        subj = random_subject(rng, adj.tags)
        return copula(subj, adj, rng.random() < 0.15, rng.random() < 0.2, rng.random() < 0.2)
    if kind == "there":
        np = random_np(rng, "PATFD", owner_ok=False)
        while np.noun.name:  # "There is Maria" is not the construction we want
            np = random_np(rng, "PATFD", owner_ok=False)
        if np.det not in ("a", "some", "two", "three", "four", "many", ""):
            np = NP(np.noun, np.plural, "" if np.plural or np.noun.mass else "a", np.adj, np.very)
        return there_is(np, random_pp(rng, LOCATIVE), rng.random() < 0.25)
    verb = rng.choice(VERBS)
    subj = random_subject(rng, verb.subjects)
    time = rng.choice(TIMES) if rng.random() < 0.25 else None
    if kind == "wh":
        if verb.prep_required or (verb.objects and "P" in verb.objects):
            return wh_question(subj)
        return wh_question(subj, verb, time)
    obj = random_np(rng, verb.objects) if verb.objects else None
    pp = None
    if verb.prep_required or rng.random() < 0.35:
        pp = random_pp(rng, verb.preps or LOCATIVE[:6] + ("with",))
    mood = rng.choices(["statement", "negation", "question"], weights=[65, 18, 17])[0]
    freq = rng.choice(FREQ) if mood == "statement" and rng.random() < 0.12 else None
    return clause(subj, verb, obj, pp, mood == "negation", mood == "question", freq, time)


def generate_pairs(seed: int, count: int, min_len: int = 4, max_len: int = 15) -> list[tuple[str, str]]:
    """``count`` distinct pairs (distinct English sides), shuffled; raises if one English
    sentence were ever produced with two different Spanish translations."""
    rng = random.Random(seed)
    seen: dict[str, str] = {}
    while len(seen) < count:
        en, es = random_sentence(rng)
        if not min_len <= len(en.split()) <= max_len:
            continue
        if seen.setdefault(en, es) != es:
            raise AssertionError(f"ambiguous source {en!r}: {seen[en]!r} vs {es!r}")
    pairs = list(seen.items())
    rng.shuffle(pairs)
    return pairs


DEFAULT_SIZES = {"train": 12000, "val": 500, "test": 500}


def write_splits(out: Path, seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, Path]:
    """Write train/val/test TSV files (header ``src\\ttgt``) into ``out``."""
    sizes = sizes or DEFAULT_SIZES
    pairs = generate_pairs(seed, sum(sizes.values()))
    out.mkdir(parents=True, exist_ok=True)
    paths, start = {}, 0
    for split, size in sizes.items():
        paths[split] = out / f"{split}.tsv"
        lines = ["src\ttgt"] + [f"{en}\t{es}" for en, es in pairs[start : start + size]]
        paths[split].write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
        start += size
    return paths


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    for split, size in DEFAULT_SIZES.items():
        parser.add_argument(f"--{split}", type=int, default=size, help=f"number of {split} pairs")
    args = parser.parse_args(argv)
    for path in write_splits(args.out, args.seed, {split: getattr(args, split) for split in DEFAULT_SIZES}).values():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
