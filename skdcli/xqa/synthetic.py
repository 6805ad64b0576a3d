"""`prep --source synthetic`: the embedded tiny default, built exactly as a user would build a real one.

    DATA/raw/        the generated corpus in the official layouts (synth.py): squad/, xquad/, MLQA_V1/
    DATA/            prepared from raw/xquad (cross-lingual sampling) + raw/MLQA_V1 (dev and test grids),
                     through the same readers as `prep --source xquad` / `--source mlqa`
    DATA/stage1/     prepared from raw/squad/train-v1.1.json (`--source squad`): the paper's stage 1
    DATA/init/       a WordPiece tokenizer trained on raw/ with HF `tokenizers` and a randomly initialised
                     tiny `BertForQuestionAnswering`, saved in HF format: the `--init` of stage 1

Nothing is downloaded. The tiny model and the templates are ours (recipes/xqa/README.md).
"""

from __future__ import annotations

from pathlib import Path

from ..engine.errors import SkdError
from ..engine.io import claim_output_dir, read_json, staged_dir
from .data import (
    ReadReport,
    cross_lingual_sample,
    find_mlqa_files,
    find_xquad_files,
    prepare,
    read_squad_file,
    write_prepared,
)
from .synth import LANGUAGES, write_corpus

SYNTHETIC_NTL = 2  # of es, de, ar, zh: 3 languages (with en) -> 9 pairs per question
TINY_BERT = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "max_position_embeddings": 128,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
}
TOKENIZER_VOCAB = 1000


SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_PIECE = 12  # longest piece (in characters) the vocabulary builder considers
WHOLE_WORD_BONUS = 3  # a whole word's score is multiplied by this: template words stay whole


def _bert_pieces():
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    return normalizer, pre_tokenizers.BertPreTokenizer()


def wordpiece_vocab(texts: list[str], vocab_size: int) -> list[str]:
    """A WordPiece vocabulary, deterministically: the specials, every character (as a word start and
    as a ``##`` continuation), then the pieces that save the most characters over the distinct texts
    (word-start prefixes and ``##`` continuations of up to 12 characters, scored count x (length - 1),
    whole words x 3, ties by the piece itself). HF's ``WordPieceTrainer`` would do, but its result
    depends on a hash-map order that changes between processes (ties among merges), and the tiny
    default must be the same corpus, tokenizer and model in every run."""
    normalizer, pre = _bert_pieces()
    words: dict[str, int] = {}
    for text in dict.fromkeys(texts):
        for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)):
            words[word] = words.get(word, 0) + 1
    alphabet = sorted({ch for w in words for ch in w})
    vocab = SPECIALS + alphabet + ["##" + ch for ch in alphabet]
    scores: dict[str, int] = {}
    for word, count in words.items():
        for i in range(len(word)):
            for j in range(i + 2, min(len(word), i + MAX_PIECE) + 1):
                piece = word[i:j] if i == 0 else "##" + word[i:j]
                bonus = WHOLE_WORD_BONUS if i == 0 and j == len(word) else 1
                scores[piece] = scores.get(piece, 0) + count * (j - i - 1) * bonus
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return vocab + [piece for piece, _ in ranked[: max(vocab_size - len(vocab), 0)]]


def train_wordpiece(texts: list[str], vocab_size: int, model_max_length: int):
    """A cased multilingual WordPiece tokenizer built with HF ``tokenizers`` (BERT normaliser with CJK
    splitting, no accent stripping, BERT pre-tokenizer, [CLS] A [SEP] B [SEP]) over ``wordpiece_vocab``,
    wrapped as a ``BertTokenizerFast`` so the offset mapping works as for mBERT."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import BertTokenizerFast

    vocab = {piece: i for i, piece in enumerate(wordpiece_vocab(texts, vocab_size))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer, tok.pre_tokenizer = _bert_pieces()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=False,
        tokenize_chinese_chars=True,
        strip_accents=False,
        model_max_length=model_max_length,
    )


def save_random_init(
    out: Path, texts: list[str], seed: int = 0, vocab_size: int = TOKENIZER_VOCAB, bert: dict | None = None
) -> Path:
    """Tokenizer + random ``BertForQuestionAnswering`` in HF format (config.json, model.safetensors,
    tokenizer files) under ``out``."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    from .model import quiet_transformers

    quiet_transformers()
    sizes = {**TINY_BERT, **(bert or {})}
    tokenizer = train_wordpiece(texts, vocab_size, sizes["max_position_embeddings"])
    config = BertConfig(vocab_size=len(tokenizer), type_vocab_size=2, pad_token_id=tokenizer.pad_token_id, **sizes)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = BertForQuestionAnswering(config)
    torch.random.set_rng_state(generator_state)
    with staged_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    return out


def _corpus_texts(raw: Path) -> list[str]:
    texts: list[str] = []
    for path in sorted(raw.rglob("*.json")):
        if path.name == "GENERATOR.json":
            continue
        for article in read_json(path)["data"]:
            for para in article["paragraphs"]:
                texts.append(para["context"])
                texts.extend(qa["question"] for qa in para["qas"])
    return texts


def prepare_synthetic(
    out: str | Path,
    *,
    seed: int = 0,
    overwrite: bool = False,
    ntl: int = SYNTHETIC_NTL,
    languages: tuple[str, ...] = LANGUAGES,
    bert: dict | None = None,
    **sizes,
) -> dict:
    """Generate the corpus and prepare it (module doc). ``bert``: overrides of the tiny BERT's sizes;
    ``sizes``: ``write_corpus`` keyword arguments."""
    out = claim_output_dir(out, overwrite, "prep.json", "prepared dataset")
    raw = out / "raw"
    corpus = write_corpus(raw, seed=seed, languages=languages, **sizes)
    report = ReadReport()
    by_lang = {
        lang: read_squad_file(path, report, lang_c=lang, lang_q=lang)
        for lang, path in find_xquad_files(raw / "xquad").items()
    }
    train = cross_lingual_sample(by_lang, ntl, seed, "sorted")
    cells = {
        key: read_squad_file(path, report, lang_c=key[1], lang_q=key[2], skip_mismatched=False)
        for key, path in find_mlqa_files(raw / "MLQA_V1").items()
    }
    stage1 = prepare("squad", raw / "squad" / "train-v1.1.json", out / "stage1", overwrite=True)
    save_random_init(out / "init", _corpus_texts(raw), seed=seed, bert=bert)
    if report.skipped:
        raise SkdError(f"the generator wrote unusable questions: {report.skipped_counts()}", raw)
    info = {
        "source": "synthetic",
        "raw": str(raw),
        "seed": seed,
        "ntl": ntl,
        "languages": list(languages),
        "sampling": "sorted",
        "generator": corpus["files"],
        "stage1": str(out / "stage1"),
        "stage1_train_examples": stage1["train_examples"],
        "init": str(out / "init"),
        "why_synthetic": "a random tiny BERT cannot learn from the 1,190 real XQuAD questions in the tiny "
        "default's CPU budget; the generator keeps the structure (parallel ids, language grid, "
        "articles, CJK) in a task it does learn",
    }
    return write_prepared(out, train=train, cells=cells, report=report, info=info)
