"""Tests of the shipped toy corpus (data/*.tsv) and the grammar that generates it."""

import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "data"
sys.path.insert(0, str(DATA))

import generate  # noqa: E402  (data/generate.py, found through the path above)
from generate import NP, clause, contract, copula, np_es, there_is, wh_question  # noqa: E402
from lexicon import ADJ, NOUN, PRONOUNS, VERB, conjugate, spanish_plural  # noqa: E402

SPLITS = ("train", "val", "test")
I, YOU, HE, SHE, WE, THEY = PRONOUNS


def read_split(name):
    lines = (DATA / f"{name}.tsv").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "", "file must end with a newline"
    return lines[0], [line.split("\t") for line in lines[1:-1]]


def np(noun, plural=False, det="the", adj=None, very=False, owner=None):
    """Shorthand: a noun phrase from English lemmas."""
    return NP(NOUN[noun], plural, det, ADJ[adj] if adj else None, very, owner)


def phrase(x):
    """Both sides of a noun phrase, as the sentence realiser would print them."""
    return " ".join(generate.np_en(x)), " ".join(contract(np_es(x)))


def test_regeneration_is_byte_identical(tmp_path):
    generate.main(["--seed", "0", "--out", str(tmp_path)])
    for split in SPLITS:
        assert (tmp_path / f"{split}.tsv").read_bytes() == (DATA / f"{split}.tsv").read_bytes(), split


def test_other_seed_differs():
    assert generate.generate_pairs(1, 50) != generate.generate_pairs(0, 50)
    assert generate.generate_pairs(1, 50) == generate.generate_pairs(1, 50)


def test_headers_columns_and_sizes():
    sizes = {}
    for split in SPLITS:
        header, rows = read_split(split)
        assert header == "src\ttgt"
        assert all(len(row) == 2 and row[0] and row[1] for row in rows)
        sizes[split] = len(rows)
    assert sizes == {"train": 12000, "val": 500, "test": 500}
    assert sum(p.stat().st_size for p in DATA.iterdir() if p.is_file()) < 2_000_000


def test_splits_are_disjoint_and_deduplicated():
    sources = {split: [row[0] for row in read_split(split)[1]] for split in SPLITS}
    for split, src in sources.items():
        assert len(set(src)) == len(src), f"duplicate source in {split}"
    assert not set(sources["train"]) & set(sources["val"])
    assert not set(sources["train"]) & set(sources["test"])
    assert not set(sources["val"]) & set(sources["test"])


def test_sentence_shape():
    for split in SPLITS:
        for en, es in read_split(split)[1]:
            assert 4 <= len(en.split()) <= 15
            assert en[0].isupper() and en[-1] in ".?"
            if en.endswith("?"):
                assert es.startswith("¿") and es.endswith("?") and es[1].isupper()
            else:
                assert es.endswith(".") and es[0].isupper()
            assert " de el " not in es and " a el " not in es


def test_noun_phrase_agreement_and_reordering():
    assert phrase(np("house", adj="red")) == ("the red house", "la casa roja")
    assert phrase(np("car", True, adj="red")) == ("the red cars", "los coches rojos")
    assert phrase(np("house", True, "some", "white")) == ("some white houses", "unas casas blancas")
    assert phrase(np("apple", det="a", adj="big")) == ("a big apple", "una manzana grande")
    assert phrase(np("egg", det="a", adj="old")) == ("an old egg", "un huevo viejo")
    assert phrase(np("flower", True, "many", "blue")) == ("many blue flowers", "muchas flores azules")
    assert phrase(np("woman", True, "our", "happy", very=True)) == (
        "our very happy women",
        "nuestras mujeres muy felices",
    )
    assert phrase(np("man", True, "these", "young")) == ("these young men", "estos hombres jóvenes")
    assert phrase(np("map", adj="new")) == ("the new map", "el mapa nuevo")  # masculine despite -a
    assert phrase(np("water", adj="cold")) == ("the cold water", "el agua fría")  # el + feminine noun


def test_spanish_morphology():
    assert [spanish_plural(w) for w in ("casa", "flor", "lápiz", "camión", "jardín", "sándwich", "rey")] == [
        "casas",
        "flores",
        "lápices",
        "camiones",
        "jardines",
        "sándwiches",
        "reyes",
    ]
    assert [conjugate("trabajar", p) for p in range(5)] == ["trabajo", "trabajas", "trabaja", "trabajamos", "trabajan"]
    assert [conjugate("comer", p) for p in range(5)] == ["como", "comes", "come", "comemos", "comen"]
    assert [conjugate("vivir", p) for p in range(5)] == ["vivo", "vives", "vive", "vivimos", "viven"]
    assert [conjugate("tener", p) for p in range(5)] == ["tengo", "tienes", "tiene", "tenemos", "tienen"]


def test_contractions():
    assert contract("voy a el parque".split()) == "voy al parque".split()
    assert contract("al lado de el río".split()) == "al lado del río".split()
    assert contract("cerca de la casa de él".split()) == "cerca de la casa de él".split()


def test_possessive_reorders_with_contraction():
    owner = np("teacher")
    assert phrase(np("book", adj="red", owner=owner)) == ("the teacher's red book", "el libro rojo del profesor")
    assert phrase(np("dog", True, owner=np("boy", True))) == ("the boys' dogs", "los perros de los niños")
    maria = NP(NOUN["Maria"], det="")
    assert phrase(np("car", owner=maria)) == ("Maria's car", "el coche de María")


def test_clauses():
    assert clause(I, VERB["eat"], np("apple", True, "the", "red")) == (
        "I eat the red apples.",
        "Yo como las manzanas rojas.",
    )
    assert clause(np("boy"), VERB["eat"], np("bread", det=""), neg=True) == (
        "The boy does not eat bread.",
        "El niño no come pan.",
    )
    assert clause(WE, VERB["live"], pp=("in", np("garden", adj="big"))) == (
        "We live in the big garden.",
        "Nosotros vivimos en el jardín grande.",
    )
    assert clause(THEY, VERB["go"], pp=("to", np("park"))) == ("They go to the park.", "Ellos van al parque.")
    assert clause(SHE, VERB["come"], pp=("from", np("market"))) == (
        "She comes from the market.",
        "Ella viene del mercado.",
    )
    assert clause(HE, VERB["see"], np("man")) == ("He sees the man.", "Él ve al hombre.")  # personal "a"
    assert clause(YOU, VERB["write"], np("letter", det="a"), question=True, time=("today", "hoy")) == (
        "Do you write a letter today?",
        "¿Escribes tú una carta hoy?",
    )
    assert clause(np("cat", True), VERB["sleep"], pp=("next to", np("river")), freq=("always", "siempre")) == (
        "The cats always sleep next to the river.",
        "Los gatos siempre duermen al lado del río.",
    )


def test_copula_there_and_wh():
    assert copula(np("house", True), ADJ["big"]) == ("The houses are big.", "Las casas son grandes.")
    assert copula(SHE, ADJ["tired"], neg=True) == ("She is not tired.", "Ella no está cansada.")
    assert copula(np("soup"), ADJ["hot"], very=True, question=True) == (
        "Is the soup very hot?",
        "¿Está la sopa muy caliente?",
    )
    assert there_is(np("cat", True, "two"), ("under", np("table"))) == (
        "There are two cats under the table.",
        "Hay dos gatos debajo de la mesa.",
    )
    assert wh_question(np("woman"), VERB["work"]) == ("Where does the woman work?", "¿Dónde trabaja la mujer?")
    assert wh_question(YOU, VERB["eat"]) == ("What do you eat?", "¿Qué comes tú?")
    assert wh_question(np("dog")) == ("Where is the dog?", "¿Dónde está el perro?")


def test_impossible_determiner_is_rejected():
    with pytest.raises(ValueError, match="does not fit"):
        np_es(np("dog", plural=True, det="a"))


def test_committed_corpus_uses_the_grammar():
    rows = [row for split in SPLITS for row in read_split(split)[1]]
    targets = " ".join(es for _, es in rows)
    for marker in (" del ", " al ", " no ", "¿", "Hay ", " está", " es ", "ñ", "á", "é", "í", "ó", "ú"):
        assert marker in targets, marker
