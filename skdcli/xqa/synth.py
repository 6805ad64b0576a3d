"""A synthetic parallel QA corpus in the real on-disk formats (the tiny default of `skd xqa run`).

Why synthetic: a randomly initialised 2-layer BERT cannot learn anything from the 1,190 real XQuAD
questions in the minute of CPU the tiny default has (the paper starts from mBERT fine-tuned on
SQuAD). This generator gives the same *structure* in a task such a model does learn: parallel
paragraphs in several languages that share question ids, so cross-lingual sampling, G-XLT / XLT and
the per-language normalisation all run on it. The real-format readers are tested on real XQuAD /
MLQA / TyDiQA files (tests/fixtures/xqa/).

Each paragraph states three facts about an invented country, drawn from six relations (capital,
longest river, founder, year of independence, national animal, flag colour), and one fact about a
second country as a distractor, in a random order. Names are invented from two syllables and are
the same in every language (as proper nouns mostly are); animals and colours are translated, with
the language's article where it has one ("el lobo", "der Wolf", "الذئب"), so the article rules of
the MLQA normalisation matter. The question asks one relation of the first country; the answer is
the value's span in the context.
Chinese sentences are written without spaces (mixed segmentation), Arabic right to left.

The templates are simple, grammatical enough to be readable, and not linguistically vetted.

Files written (see ``write_corpus``):
    squad/train-v1.1.json                           English only, its own paragraphs (stage 1, "SQuAD")
    xquad/xquad.{lang}.json                         parallel, shared ids (stage 2 source, "XQuAD")
    MLQA_V1/{dev,test}/{split}-context-{cl}-question-{ql}.json   the full language grid ("MLQA")
"""

from __future__ import annotations

import random
from pathlib import Path

from ..engine.io import atomic_write_json

LANGUAGES = ("en", "es", "de", "ar", "zh")

# relation -> language -> (fact template, question template); {e} = the country, {v} = the value
TEMPLATES: dict[str, dict[str, tuple[str, str]]] = {
    "capital": {
        "en": ("The capital of {e} is {v}.", "What is the capital of {e}?"),
        "es": ("La capital de {e} es {v}.", "¿Cuál es la capital de {e}?"),
        "de": ("Die Hauptstadt von {e} ist {v}.", "Was ist die Hauptstadt von {e}?"),
        "ar": ("عاصمة {e} هي {v}.", "ما هي عاصمة {e}؟"),
        "zh": ("{e}的首都是{v}。", "{e}的首都是哪里？"),
    },
    "river": {
        "en": ("The longest river in {e} is {v}.", "Which is the longest river in {e}?"),
        "es": ("El río más largo de {e} es {v}.", "¿Cuál es el río más largo de {e}?"),
        "de": ("Der längste Fluss in {e} ist {v}.", "Welcher ist der längste Fluss in {e}?"),
        "ar": ("أطول نهر في {e} هو {v}.", "ما هو أطول نهر في {e}؟"),
        "zh": ("{e}最长的河流是{v}。", "{e}最长的河流是哪条？"),
    },
    "founder": {
        "en": ("{e} was founded by {v}.", "Who founded {e}?"),
        "es": ("{e} fue fundado por {v}.", "¿Quién fundó {e}?"),
        "de": ("{e} wurde von {v} gegründet.", "Wer gründete {e}?"),
        "ar": ("أسس {e} على يد {v}.", "من أسس {e}؟"),
        "zh": ("{e}由{v}创建。", "谁创建了{e}？"),
    },
    "year": {
        "en": ("{e} became independent in {v}.", "When did {e} become independent?"),
        "es": ("{e} se independizó en {v}.", "¿Cuándo se independizó {e}?"),
        "de": ("{e} wurde {v} unabhängig.", "Wann wurde {e} unabhängig?"),
        "ar": ("استقلت {e} عام {v}.", "متى استقلت {e}؟"),
        "zh": ("{e}于{v}年独立。", "{e}哪一年独立？"),
    },
    "animal": {
        "en": ("The national animal of {e} is {v}.", "What is the national animal of {e}?"),
        "es": ("El animal nacional de {e} es {v}.", "¿Cuál es el animal nacional de {e}?"),
        "de": ("Das Nationaltier von {e} ist {v}.", "Was ist das Nationaltier von {e}?"),
        "ar": ("الحيوان الوطني في {e} هو {v}.", "ما هو الحيوان الوطني في {e}؟"),
        "zh": ("{e}的国家动物是{v}。", "{e}的国家动物是什么？"),
    },
    "colour": {
        "en": ("The flag of {e} is {v}.", "What colour is the flag of {e}?"),
        "es": ("La bandera de {e} es {v}.", "¿De qué color es la bandera de {e}?"),
        "de": ("Die Flagge von {e} ist {v}.", "Welche Farbe hat die Flagge von {e}?"),
        "ar": ("علم {e} لونه {v}.", "ما لون علم {e}؟"),
        "zh": ("{e}的国旗是{v}的。", "{e}的国旗是什么颜色？"),
    },
}

# translated values: the answer span includes the language's article
LEXICON: dict[str, list[dict[str, str]]] = {
    "animal": [
        {"en": "the wolf", "es": "el lobo", "de": "der Wolf", "ar": "الذئب", "zh": "狼"},
        {"en": "the bear", "es": "el oso", "de": "der Bär", "ar": "الدب", "zh": "熊"},
        {"en": "the eagle", "es": "el águila", "de": "der Adler", "ar": "النسر", "zh": "鹰"},
        {"en": "the goat", "es": "la cabra", "de": "die Ziege", "ar": "الماعز", "zh": "山羊"},
        {"en": "the horse", "es": "el caballo", "de": "das Pferd", "ar": "الحصان", "zh": "马"},
        {"en": "the fox", "es": "el zorro", "de": "der Fuchs", "ar": "الثعلب", "zh": "狐狸"},
        {"en": "the owl", "es": "la lechuza", "de": "die Eule", "ar": "البومة", "zh": "猫头鹰"},
        {"en": "the lion", "es": "el león", "de": "der Löwe", "ar": "الأسد", "zh": "狮子"},
    ],
    "colour": [
        {"en": "red", "es": "rojo", "de": "rot", "ar": "أحمر", "zh": "红色"},
        {"en": "blue", "es": "azul", "de": "blau", "ar": "أزرق", "zh": "蓝色"},
        {"en": "green", "es": "verde", "de": "grün", "ar": "أخضر", "zh": "绿色"},
        {"en": "yellow", "es": "amarillo", "de": "gelb", "ar": "أصفر", "zh": "黄色"},
        {"en": "black", "es": "negro", "de": "schwarz", "ar": "أسود", "zh": "黑色"},
        {"en": "white", "es": "blanco", "de": "weiß", "ar": "أبيض", "zh": "白色"},
    ],
}
RELATIONS = tuple(TEMPLATES)
ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
CODAS = ("", "", "", "n", "r", "s", "l", "k")


def invented_name(rng: random.Random, syllables: tuple[int, int] = (2, 3)) -> str:
    n = rng.randint(*syllables)
    word = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(n))
    return word.capitalize()


def _value(relation: str, rng: random.Random, max_syllables: int) -> dict[str, str]:
    """One value of ``relation`` in every language."""
    if relation in LEXICON:
        return dict(rng.choice(LEXICON[relation]))
    if relation == "year":
        v = str(rng.randint(1200, 1999))
    elif relation == "founder":
        v = f"{invented_name(rng, (1, 2))} {invented_name(rng, (2, max_syllables))}"
    else:
        v = invented_name(rng, (2, max_syllables))
    return {lang: v for lang in LANGUAGES}


def _country(rng: random.Random, max_syllables: int) -> tuple[str, dict[str, dict[str, str]]]:
    return invented_name(rng, (2, max_syllables)), {rel: _value(rel, rng, max_syllables) for rel in RELATIONS}


def _sentence(lang: str, relation: str, entity: str, value: str) -> tuple[str, int]:
    """The fact sentence and the character offset of ``value`` inside it."""
    template = TEMPLATES[relation][lang][0]
    head, tail = template.split("{v}")
    head = head.format(e=entity)
    return head + value + tail.format(e=entity), len(head)


def _join(lang: str, sentences: list[str]) -> tuple[str, list[int]]:
    """The paragraph and each sentence's start offset (Chinese: no spaces between sentences)."""
    sep = "" if lang == "zh" else " "
    starts, pos = [], 0
    for s in sentences:
        starts.append(pos)
        pos += len(s) + len(sep)
    return sep.join(sentences), starts


def make_paragraph(
    rng: random.Random,
    languages: tuple[str, ...],
    n_questions: int,
    n_facts: int,
    n_distractors: int,
    qid_prefix: str,
    max_syllables: int = 3,
) -> dict[str, dict]:
    """One parallel paragraph: language -> SQuAD paragraph {context, qas}, same ids in every language."""
    entity, facts = _country(rng, max_syllables)
    other, other_facts = _country(rng, max_syllables)
    while other == entity:
        other, other_facts = _country(rng, max_syllables)
    main_rel = rng.sample(RELATIONS, n_facts)
    dis_rel = rng.sample(RELATIONS, n_distractors)
    order = [(entity, r, facts[r]) for r in main_rel] + [(other, r, other_facts[r]) for r in dis_rel]
    rng.shuffle(order)
    asked = rng.sample(main_rel, min(n_questions, len(main_rel)))
    out = {}
    for lang in languages:
        sentences, value_at = [], []
        for e, r, v in order:
            s, at = _sentence(lang, r, e, v[lang])
            sentences.append(s)
            value_at.append(at)
        context, starts = _join(lang, sentences)
        qas = []
        for k, rel in enumerate(asked):
            i = next(j for j, (e, r, _) in enumerate(order) if e == entity and r == rel)
            answer = facts[rel][lang]
            start = starts[i] + value_at[i]
            assert context[start : start + len(answer)] == answer
            qas.append(
                {
                    "id": f"{qid_prefix}-q{k}",
                    "question": TEMPLATES[rel][lang][1].format(e=entity),
                    "answers": [{"text": answer, "answer_start": start}],
                }
            )
        out[lang] = {"context": context, "qas": qas}
    return out


def _squad_json(paragraphs: list[dict], title_prefix: str, version) -> dict:
    """SQuAD v1.1 layout, 4 paragraphs per article."""
    data = []
    for i in range(0, len(paragraphs), 4):
        data.append({"title": f"{title_prefix}_{i // 4:03d}", "paragraphs": paragraphs[i : i + 4]})
    return {"data": data, "version": version}


def write_corpus(
    out: str | Path,
    *,
    seed: int = 0,
    languages: tuple[str, ...] = LANGUAGES,
    squad_paragraphs: int = 1200,
    xquad_paragraphs: int = 80,
    dev_paragraphs: int = 8,
    test_paragraphs: int = 40,
    questions_per_paragraph: int = 3,
    n_facts: int = 3,
    n_distractors: int = 1,
    max_syllables: int = 2,
) -> dict:
    """Write the three synthetic sets under ``out``; returns what was written (paths and counts)."""
    unknown = [lang for lang in languages if lang not in LANGUAGES]
    if unknown:
        raise ValueError(f"the synthetic generator knows {', '.join(LANGUAGES)}; not {', '.join(unknown)}")
    out = Path(out)
    rng = random.Random(seed)

    def paragraphs(n: int, prefix: str, langs: tuple[str, ...], n_q: int) -> list[dict[str, dict]]:
        return [
            make_paragraph(rng, langs, n_q, n_facts, n_distractors, f"{prefix}{i:05d}", max_syllables) for i in range(n)
        ]

    written: dict[str, int] = {}

    def write(path: Path, obj: dict) -> None:
        atomic_write_json(path, obj)
        written[str(path.relative_to(out))] = sum(len(p["qas"]) for a in obj["data"] for p in a["paragraphs"])

    squad = paragraphs(squad_paragraphs, "squad", ("en",), questions_per_paragraph)
    write(out / "squad" / "train-v1.1.json", _squad_json([p["en"] for p in squad], "Squad", "1.1"))
    xquad = paragraphs(xquad_paragraphs, "xquad", languages, questions_per_paragraph)
    for lang in languages:
        write(out / "xquad" / f"xquad.{lang}.json", _squad_json([p[lang] for p in xquad], "Xquad", "1.1"))
    for split, n in (("dev", dev_paragraphs), ("test", test_paragraphs)):
        grid = paragraphs(n, split, languages, 2)
        for cl in languages:
            for ql in languages:
                # MLQA: context (and answers) in cl, the question in ql, same ids (cross-language files)
                paras = [
                    {
                        "context": p[cl]["context"],
                        "qas": [
                            {**qa_c, "question": qa_q["question"]} for qa_c, qa_q in zip(p[cl]["qas"], p[ql]["qas"])
                        ],
                    }
                    for p in grid
                ]
                write(
                    out / "MLQA_V1" / split / f"{split}-context-{cl}-question-{ql}.json",
                    _squad_json(paras, f"Mlqa_{split}", 1.0),
                )
    atomic_write_json(
        out / "GENERATOR.json",
        {
            "generator": "skdcli.xqa.synth.write_corpus",
            "seed": seed,
            "languages": list(languages),
            "squad_paragraphs": squad_paragraphs,
            "xquad_paragraphs": xquad_paragraphs,
            "dev_paragraphs": dev_paragraphs,
            "test_paragraphs": test_paragraphs,
            "questions_per_paragraph": questions_per_paragraph,
            "n_facts": n_facts,
            "n_distractors": n_distractors,
            "max_syllables": max_syllables,
            "files": written,
        },
    )
    return {"root": str(out), "files": written}
