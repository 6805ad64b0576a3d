"""The shared text stack of the nlg-smooth and nlp-embed recipes.

tokenizer.py  sentencepiece model trained on the training side, stored with the data (pad/unk/bos/eos ids 0-3)
metrics.py    BLEU (tokenized fairseq-style and detokenized sacreBLEU), chrF, token-level ECE/MCE,
              reliability diagram, NLL and perplexity
parallel.py   parallel corpora: IWSLT14 prepared layout, TSV/JSONL through HF datasets, the synthetic toy pair
seq2seq.py    Transformer encoder-decoder with tied embeddings, greedy and beam search
lm.py, lm_corpus.py   language-model side (owned by the nlp-embed recipe)
"""
