"""Vocabulary and morphology of torchlingo's toy English->Spanish grammar.

Nouns, adjectives and verbs carry both languages' forms plus semantic tags that
keep generated sentences sensible; the helpers inflect Spanish regularly
(plurals, adjective agreement, present tense) with explicit irregular forms.
"""

from __future__ import annotations

from dataclasses import dataclass

VOWELS_ACCENTED = {"á": "a", "é": "e", "í": "i", "ó": "o", "ú": "u"}


def english_plural(word: str) -> str:
    """Regular English plural: box->boxes, city->cities, dog->dogs."""
    if word.endswith(("s", "sh", "ch", "x")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def spanish_plural(word: str) -> str:
    """Regular Spanish plural: casa->casas, flor->flores, lápiz->lápices, camión->camiones."""
    if word[-1] in "aeiouáéíóú":
        return word + "s"
    if word.endswith("z"):
        return word[:-1] + "ces"
    last = max((i for i, ch in enumerate(word) if ch in VOWELS_ACCENTED), default=-1)
    if last >= 0 and not any(ch in "aeiou" for ch in word[last + 1 :]):
        word = word[:last] + VOWELS_ACCENTED[word[last]] + word[last + 1 :]  # stress now regular
    return word + "es"


@dataclass(frozen=True)
class Noun:
    """A noun with both languages' forms; tags say which verbs/adjectives/prepositions fit."""

    en: str
    en_pl: str
    es: str
    es_pl: str
    fem: bool
    tags: str
    mass: bool = False  # uncountable: singular only, no "a"/numbers
    el_fem: bool = False  # feminine noun taking "el" (el agua)
    name: bool = False  # proper name: no determiner


def nouns(tags: str, spec: str, mass: bool = False, name: bool = False) -> list[Noun]:
    """Parse 'en[/en_pl]:es[/es_pl]:g[:extra tags]' items separated by commas."""
    out = []
    for item in spec.split(","):
        en, es, gender, *extra = item.strip().split(":")
        en_sg, _, en_pl = en.partition("/")
        es_sg, _, es_pl = es.partition("/")
        out.append(
            Noun(
                en_sg,
                en_pl or english_plural(en_sg),
                es_sg,
                es_pl or spanish_plural(es_sg),
                gender.startswith("f"),
                tags + "".join(extra),
                mass,
                gender == "fel",
                name,
            )
        )
    return out


# Tags: P person, A animal, T thing, F food, D drink, L place; r readable, w writable,
# o openable, b breakable, u usable tool, c has a surface/underside, m can be made.
NOUNS = (
    nouns(
        "P",
        "man/men:hombre:m, woman/women:mujer:f, boy:niño:m, girl:niña:f, teacher:profesor:m, "
        "doctor:médico:m, student:estudiante:m, friend:amigo:m, brother:hermano:m, sister:hermana:f, "
        "mother:madre:f, father:padre:m, neighbor:vecino:m, farmer:granjero:m, baby:bebé:m, "
        "king:rey:m, queen:reina:f, nurse:enfermera:f, waiter:camarero:m",
    )
    + nouns("P", "Maria:María:f, John:Juan:m, Peter:Pedro:m, Lucy:Lucía:f, Anna:Ana:f, Carlos:Carlos:m", name=True)
    + nouns(
        "A",
        "dog:perro:m, cat:gato:m, horse:caballo:m, bird:pájaro:m, cow:vaca:f, mouse/mice:ratón:m, "
        "duck:pato:m, rabbit:conejo:m, pig:cerdo:m, lion:león:m, hen:gallina:f, monkey:mono:m",
    )
    + nouns(
        "T",
        "car:coche:m:uc, book:libro:m:rwo, letter:carta:f:rwo, newspaper:periódico:m:r, map:mapa:m:r, "
        "table:mesa:f:c, chair:silla:f:c, door:puerta:f:o, window:ventana:f:ob, bike:bicicleta:f:u, "
        "ball:pelota:f, box:caja:f:om, bag:bolsa:f:o, cup:taza:f:b, glass:vaso:m:b, key:llave:f:u, "
        "pen:bolígrafo:m:u, pencil:lápiz:m:u, picture:cuadro:m:m, phone:teléfono:m:ub, "
        "computer:ordenador:m:u, shirt:camisa:f, hat:sombrero:m, shoe:zapato:m, clock:reloj:m:b, "
        "bed:cama:f:c, lamp:lámpara:f:b, flower:flor:f, boat:barco:m:u, truck:camión:m:uc, "
        "plate:plato:m:b, knife/knives:cuchillo:m:u, bottle:botella:f:bo, dress:vestido:m",
    )
    + nouns("w", "song:canción:f")
    + nouns(
        "L",
        "house:casa:f, garden:jardín:m, park:parque:m, city:ciudad:f, school:escuela:f, "
        "kitchen:cocina:f, street:calle:f, river:río:m, beach:playa:f, market:mercado:m, "
        "library:biblioteca:f, room:habitación:f, forest:bosque:m, church:iglesia:f, "
        "hospital:hospital:m, store:tienda:f, station:estación:f, village:pueblo:m, office:oficina:f, "
        "restaurant:restaurante:m, bridge:puente:m:c, lake:lago:m",
    )
    + nouns("c", "tree:árbol:m")
    + nouns(
        "F",
        "apple:manzana:f, egg:huevo:m, banana:plátano:m, cake:pastel:m:m, cookie:galleta:f, "
        "tomato/tomatoes:tomate:m, sandwich:sándwich:m:m, potato/potatoes:patata:f, "
        "carrot:zanahoria:f, pear:pera:f, lemon:limón:m",
    )
    + nouns(
        "F",
        "bread:pan:m, rice:arroz:m, cheese:queso:m, soup:sopa:f:m, fish:pescado:m, meat:carne:f, "
        "salad:ensalada:f:m, chocolate:chocolate:m",
        mass=True,
    )
    + nouns(
        "D",
        "water:agua:fel, milk:leche:f, coffee:café:m, tea:té:m, juice:zumo:m, wine:vino:m, lemonade:limonada:f",
        mass=True,
    )
)
NOUN = {n.en: n for n in NOUNS}


@dataclass(frozen=True)
class Adj:
    """An adjective: Spanish masculine singular form, explicit plural if irregular, fitting
    noun tags, and whether it takes "estar" (states) rather than "ser" (qualities)."""

    en: str
    es: str
    tags: str
    estar: bool = False
    es_pl: str = ""

    def form(self, fem: bool, plural: bool) -> str:
        """Agree with a noun: rojo/roja/rojos/rojas, grande/grandes, feliz/felices."""
        word = self.es[:-1] + "a" if fem and self.es.endswith("o") else self.es
        if not plural:
            return word
        return self.es_pl or spanish_plural(word)


ADJS = [
    Adj(*spec)
    for spec in [
        ("red", "rojo", "TL"),
        ("white", "blanco", "TL"),
        ("black", "negro", "TLA"),
        ("yellow", "amarillo", "TL"),
        ("blue", "azul", "TL"),
        ("green", "verde", "TL"),
        ("big", "grande", "TAL"),
        ("small", "pequeño", "TAL"),
        ("new", "nuevo", "TL"),
        ("old", "viejo", "PATL"),
        ("young", "joven", "PA", False, "jóvenes"),
        ("tall", "alto", "P"),
        ("pretty", "bonito", "TLA"),
        ("ugly", "feo", "TLA"),
        ("clean", "limpio", "TL", True),
        ("dirty", "sucio", "TLA", True),
        ("happy", "feliz", "PA", True),
        ("sad", "triste", "PA", True),
        ("tired", "cansado", "PA", True),
        ("fast", "rápido", "A"),
        ("slow", "lento", "A"),
        ("cold", "frío", "FD", True),
        ("hot", "caliente", "FD", True),
        ("delicious", "delicioso", "FD"),
        ("expensive", "caro", "TFD"),
        ("cheap", "barato", "T"),
        ("beautiful", "hermoso", "L"),
        ("empty", "vacío", "T", True),
        ("full", "lleno", "T", True),
        ("heavy", "pesado", "T"),
        ("modern", "moderno", "L"),
        ("quiet", "tranquilo", "L"),
        ("famous", "famoso", "P"),
        ("strong", "fuerte", "PA"),
        ("kind", "amable", "P"),
    ]
]
ADJ = {a.en: a for a in ADJS}

ENDINGS = {
    "ar": ("o", "as", "a", "amos", "an"),
    "er": ("o", "es", "e", "emos", "en"),
    "ir": ("o", "es", "e", "imos", "en"),
}
IRREGULAR = {
    "tener": "tengo tienes tiene tenemos tienen",
    "querer": "quiero quieres quiere queremos quieren",
    "ver": "veo ves ve vemos ven",
    "hacer": "hago haces hace hacemos hacen",
    "encontrar": "encuentro encuentras encuentra encontramos encuentran",
    "cerrar": "cierro cierras cierra cerramos cierran",
    "conocer": "conozco conoces conoce conocemos conocen",
    "dormir": "duermo duermes duerme dormimos duermen",
    "jugar": "juego juegas juega jugamos juegan",
    "ir": "voy vas va vamos van",
    "venir": "vengo vienes viene venimos vienen",
    "ser": "soy eres es somos son",
    "estar": "estoy estás está estamos están",
}


def conjugate(infinitive: str, person: int) -> str:
    """Present tense; person 0..4 = yo, tú, él/ella, nosotros, ellos."""
    if infinitive in IRREGULAR:
        return IRREGULAR[infinitive].split()[person]
    return infinitive[:-2] + ENDINGS[infinitive[-2:]][person]


@dataclass(frozen=True)
class Verb:
    """A verb: English base and 3sg forms, Spanish infinitive, object tags ('' when
    intransitive), subject tags, and the prepositions it may take."""

    en: str
    en3: str
    es: str
    objects: str
    subjects: str = "P"
    preps: tuple[str, ...] = ()
    prep_required: bool = False


LOC = ("in", "near", "behind", "next to", "in front of", "with")
VERBS = [
    Verb(*spec)
    for spec in [
        ("eat", "eats", "comer", "F", "PA"),
        ("drink", "drinks", "beber", "D", "PA"),
        ("read", "reads", "leer", "r"),
        ("write", "writes", "escribir", "w"),
        ("buy", "buys", "comprar", "TFD"),
        ("sell", "sells", "vender", "TF"),
        ("want", "wants", "querer", "TFD", "PA"),
        ("have", "has", "tener", "TA"),
        ("need", "needs", "necesitar", "TFD"),
        ("see", "sees", "ver", "PATL", "PA"),
        ("watch", "watches", "mirar", "PAT", "PA"),
        ("clean", "cleans", "limpiar", "TL"),
        ("paint", "paints", "pintar", "TL"),
        ("wash", "washes", "lavar", "TA"),
        ("carry", "carries", "llevar", "TF", "PA"),
        ("open", "opens", "abrir", "o"),
        ("close", "closes", "cerrar", "o"),
        ("find", "finds", "encontrar", "TA"),
        ("help", "helps", "ayudar", "PA"),
        ("call", "calls", "llamar", "PA"),
        ("visit", "visits", "visitar", "PL"),
        ("love", "loves", "amar", "PA"),
        ("know", "knows", "conocer", "PL"),
        ("cook", "cooks", "cocinar", "F"),
        ("draw", "draws", "dibujar", "PATL"),
        ("make", "makes", "hacer", "m"),
        ("break", "breaks", "romper", "b", "PA"),
        ("share", "shares", "compartir", "F"),
        ("use", "uses", "usar", "u"),
        ("run", "runs", "correr", "", "PA", LOC + ("to",)),
        ("walk", "walks", "caminar", "", "PA", LOC + ("to",)),
        ("work", "works", "trabajar", "", "P", LOC),
        ("sing", "sings", "cantar", "", "PA", LOC),
        ("dance", "dances", "bailar", "", "P", LOC),
        ("sleep", "sleeps", "dormir", "", "PA", LOC),
        ("swim", "swims", "nadar", "", "PA", LOC),
        ("play", "plays", "jugar", "", "PA", LOC),
        ("live", "lives", "vivir", "", "PA", LOC),
        ("study", "studies", "estudiar", "", "P", LOC),
        ("rest", "rests", "descansar", "", "PA", LOC),
        ("go", "goes", "ir", "", "PA", ("to",), True),
        ("come", "comes", "venir", "", "PA", ("from",), True),
    ]
]
VERB = {v.en: v for v in VERBS}

# English preposition -> (Spanish, tags of nouns it takes).
PREPS = {
    "in": ("en", "L"),
    "on": ("en", "c"),
    "near": ("cerca de", "L"),
    "behind": ("detrás de", "Lc"),
    "next to": ("al lado de", "L"),
    "in front of": ("delante de", "L"),
    "under": ("debajo de", "c"),
    "with": ("con", "PA"),
    "to": ("a", "L"),
    "from": ("de", "L"),
}
LOCATIVE = ("in", "on", "near", "behind", "next to", "in front of", "under")
# Determiner -> (masc sg, fem sg, masc pl, fem pl); None where the combination is impossible.
DETS = {
    "the": ("el", "la", "los", "las"),
    "a": ("un", "una", None, None),
    "some": (None, None, "unos", "unas"),
    "this": ("este", "esta", None, None),
    "that": ("ese", "esa", None, None),
    "these": (None, None, "estos", "estas"),
    "those": (None, None, "esos", "esas"),
    "my": ("mi", "mi", "mis", "mis"),
    "your": ("tu", "tu", "tus", "tus"),
    "his": ("su", "su", "sus", "sus"),
    "her": ("su", "su", "sus", "sus"),
    "our": ("nuestro", "nuestra", "nuestros", "nuestras"),
    "their": ("su", "su", "sus", "sus"),
    "two": (None, None, "dos", "dos"),
    "three": (None, None, "tres", "tres"),
    "four": (None, None, "cuatro", "cuatro"),
    "many": (None, None, "muchos", "muchas"),
    "": ("", "", "", ""),
}
POSSESSIVE = ("my", "your", "his", "her", "our", "their")
SG_DETS = ("the", "the", "a", "this", "that") + POSSESSIVE
PL_DETS = ("the", "the", "some", "these", "those", "two", "three", "four", "many", "") + POSSESSIVE
MASS_DETS = ("the", "", "this", "my", "your", "our")
# (English, Spanish, person 0..4, feminine, plural)
PRONOUNS = [
    ("I", "yo", 0, False, False),
    ("you", "tú", 1, False, False),
    ("he", "él", 2, False, False),
    ("she", "ella", 2, True, False),
    ("we", "nosotros", 3, False, True),
    ("they", "ellos", 4, False, True),
]
TIMES = [
    ("today", "hoy"),
    ("now", "ahora"),
    ("every day", "todos los días"),
    ("in the morning", "por la mañana"),
    ("in the afternoon", "por la tarde"),
    ("at night", "por la noche"),
    ("on Sundays", "los domingos"),
    ("every week", "cada semana"),
]
FREQ = [("always", "siempre"), ("sometimes", "a veces"), ("usually", "normalmente"), ("never", "nunca")]
