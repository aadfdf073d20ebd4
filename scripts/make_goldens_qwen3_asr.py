"""Build random-weight Qwen3-ASR models (and a Qwen3-ForcedAligner) with transformers 5.23's in-tree
`qwen3_asr`, save them in both checkpoint layouts users meet, and record transformers' outputs as
goldens.

Reference: transformers 5.23.0 (`Qwen3ASRForConditionalGeneration`,
`Qwen3ASRForTokenClassification`, `Qwen3ASRFeatureExtractor`), CPU torch with 1 thread.
transformers 5.23 windows the audio attention correctly on CPU (REFERENCE-SETUP §2b: qwen-asr's
own backend does not), so it is the reference.
qwen-asr 0.0.6 (installed with --no-deps, never imported as a package) supplies the original config
layout (read from its `configuration_qwen3_asr.py`) and its `Qwen3ForceAlignProcessor` (word split,
aligner input text, `fix_timestamp`), taken from the installed source with `ast`.

Environment the committed files were made in (shared/REFERENCE-SETUP.md §1b/§2):
    python3 -m venv /tmp/venv_ref
    /tmp/venv_ref/bin/pip install torch==2.13.0 transformers==5.23.0 soundfile    # local CPU wheel
    /tmp/venv_ref/bin/pip install --no-deps qwen-asr==0.0.6 scipy
    -> Python 3.11, torch 2.13.0+cpu, transformers 5.23.0, tokenizers 0.23.3, numpy 2.4.6,
       scipy 1.17.1, soundfile 0.14.0, safetensors 0.8.0 (tests/golden/qwen3_asr_env.json)
Commands (P = /tmp/venv_ref/bin/python, S = scripts/make_goldens_qwen3_asr.py):
    P S                    # tokenizer, tiny models, goldens
    P S --tokenizer-only   # tests/tiny/qwen3_asr_tokenizer only
    P S --check            # rebuild in a temp dir, compare bit for bit (exit 1 on a difference)
    P S --real /tmp/qwen3_real [--real-clips jfk ...]
        # 0.6B size: models + tokenizer into DIR, summaries tests/golden/qwen3_asr_real_<clip>.*
    The ASR seed search starts at the committed env json's `asr_seed` (seeds below it failed);
    `--full-search` starts it at 0 (about 6 minutes for the tiny model).

Tokenizer (tests/tiny/qwen3_asr_tokenizer): a synthetic Qwen2-style byte-level BPE trained here with
`tokenizers` (deterministic: fixed corpus = CORPUS + manifest transcripts + chat-template words and
the
30 language names repeated, single thread, BpeTrainer(vocab_size=2000, min_frequency=1,
initial_alphabet=all 256 ByteLevel chars)). Qwen2's normalizer (NFC), pre-tokenizer (Split with
Qwen2's regex, isolated; then ByteLevel(add_prefix_space=False, use_regex=False)), ByteLevel decoder
and post-processor. Ids: 0..255 the byte chars in GPT-2 bytes_to_unicode order, 256..1999 one token
per merge in merge order, then the added special tokens <|endoftext|> 2000, <|im_start|> 2001,
<|im_end|> 2002, <|audio_start|> 2003, <|audio_end|> 2004, <|audio_pad|> 2005, <asr_text> 2006,
<timestamp> 2007 (2008 in all). Files: vocab.json, merges.txt ("#version: 0.2" header),
tokenizer.json, tokenizer_config.json (Qwen2Tokenizer, eos <|im_end|>, pad <|endoftext|>,
audio_token / audio_bos_token / audio_eos_token as 5.23's processor reads them). transformers 5.23
has a single `Qwen2Tokenizer` (tokenizers-backed; no slow class, no Qwen2TokenizerFast); it loads
the
folder, and also vocab.json + merges.txt + tokenizer_config.json without tokenizer.json, with equal
ids.
The ids deliberately differ from the real 151643.. ones: npasr must read every id from the files.

Tiny model (TINY; vocab 2008): audio d_model 64, 2 layers, 4 heads, ffn 128, conv channels 16,
output_dim 64, n_window 50, n_window_infer 800; LLM hidden 64, 2 layers, 4 heads / 2 KV heads,
head_dim 32 (4 x 32 != 64, as in the real model), intermediate 128, rms eps 1e-6, rope_theta 1e6,
tied embeddings. Special ids in config.json come from the tokenizer: audio_token_id 2005,
timestamp_token_id 2007, eos [2000, 2002], pad 2002 (transformers' defaults 151645 / (151643,
151645)
mapped to the synthetic ids); the orig layout's audio_start_token_id 2003 and user_token_id
(the id of "user").
Random weights (REFERENCE-SETUP §0): every parameter is redrawn in named_parameters() order from one
seeded torch.Generator: matrices and conv kernels N(0, 1/fan_in), 1-D weights 1 + 0.1 N, biases 0.1
N
(buffers - the sinusoid table, inv_freq - are left). A random tied-embedding LLM repeats one token
(or a 2-cycle) forever, so `rebalance_` then scales the embedding x2, every mlp.down_proj x8, gives
the
final RMSNorm weight random signs and shrinks the <|endoftext|>/<|im_end|> rows x0.05 (see its
docstring). A seed is kept only if on all 3 clips x 3 prompts greedy decoding (80 new tokens) has no
EOS in the first 64 steps, >= 20 distinct tokens, no run of one token longer than 10, and a
top1-top2
logit margin >= 1e-3 x std(logits row) at every step (`quality_ok`); seeds 0..137 fail, 138 passes
(min relative margin 1.15e-3).
Layouts (both reload to bit-identical weights and logits, checked by the script):
  - tests/tiny/qwen3_asr_tiny_hf: `save_pretrained` (model.safetensors with model.audio_tower.*,
    model.multi_modal_projector.linear_{1,2}.*, model.language_model.*, no lm_head (tied);
    config.json
    and generation_config.json as transformers writes them), preprocessor_config.json
    (Qwen3ASRFeatureExtractor), the 4 tokenizer files.
  - tests/tiny/qwen3_asr_tiny_hf_bf16: the same weights rounded to bfloat16 (config dtype bfloat16),
    without tokenizer.json. Goldens are from the float32 model; qwen3_asr_tiny_bf16.npz has
    transformers'
    float32 run of the bf16-rounded weights (first-step logits, 80 tokens, margins of prompt a).
  - tests/tiny/qwen3_asr_tiny_orig: the original Qwen/Qwen3-ASR layout: thinker.audio_tower.* (incl.
    proj1/proj2), thinker.model.*, a stored thinker.lm_head.weight equal to the embedding, in two
    shards (audio tower | LLM + head) + model.safetensors.index.json; config.json in qwen-asr
    0.0.6's
    layout (thinker_config{audio_config, text_config, audio_token_id, audio_start_token_id,
    user_token_id}, support_languages; every __init__ argument of its config classes written, the
    wrong
    class defaults corrected: n_window 50, n_window_infer 800, rope_theta 1e6, rope_scaling with
    mrope_section); preprocessor_config.json as WhisperFeatureExtractor; vocab.json + merges.txt +
    tokenizer_config.json (no tokenizer.json, like the real repos).
Cross-check (done once by hand, not part of --check): in a venv with torch 2.13.0, transformers
4.57.6 and qwen-asr 0.0.6 (--no-deps, REFERENCE-SETUP §2b import trick), qwen-asr's own
Qwen3ASRForConditionalGeneration.from_pretrained(tests/tiny/qwen3_asr_tiny_orig) loads with no
missing or unexpected keys, its WhisperFeatureExtractor mel equals `mel`, and on austen0890 and ru1
(<= 8 s, where qwen-asr's unwindowed CPU attention is the same) its first-step logits for prompts
a/b/c equal the goldens exactly and its greedy tokens for prompt a are identical. The real-size orig
layout also loads there with no missing or unexpected keys (782.4 M parameters).
Forced aligner (tests/tiny/qwen3_aligner_tiny_hf): `Qwen3ASRForTokenClassification` with the tiny
dims,
num_labels (classify_num) 256, head `score` (no bias), timestamp_token_id 2007, 80 ms per class
(5.23's config has no timestamp_segment_time; its processor defaults to 80). The random head is
refit
(`balance_aligner_head_`) so the argmax at the jfk timestamp positions follows `aligner_target`
(increasing, with outliers hitting every branch of fix_timestamp).

Audio: shared/data clips read with soundfile (float64, channels averaged); jfk.flac (44.1 kHz
stereo)
is resampled to 16 kHz with scipy.signal.resample_poly(x, 160, 441) in float64 and stored as `audio`
in its golden; the 16 kHz wav clips are int16 / 32768 exactly (their goldens keep `audio_sha256`).
Mel: Qwen3ASRFeatureExtractor()(audio, sampling_rate=16000, padding=True,
return_attention_mask=True);
`mel` is the unpadded (128, T = N // 160) part; the extractor zero-pads to a multiple of 100 frames
(`mel_padded_len`).
Prompts (REFERENCE.md §3.5), built by hand as qwen-asr's `_build_text_prompt` renders them (its chat
template is not in the wheel) and tokenized with the synthetic tokenizer:
  a: auto language, empty context; b: forced "English" (assistant prefill `language
  English<asr_text>`);
  c: context "Kennedy Boston Moscow", auto language.
Real size (--real DIR; not committed): the 0.6B config of REFERENCE §3.1 (audio 18 x 896 / 14 heads
/
ffn 3584 / conv 480 / output 1024; LLM 28 x 1024, 16 / 8 heads, head_dim 128, intermediate 3072;
vocab 151936, 782.4 M parameters), float32 random weights with the same conventions and rebalancing,
seed search over REAL_SEEDS with 72 new tokens (margins and EOS decide; variety is reported). The
tokenizer keeps the synthetic BPE (0..1999), fills 2000..151642 with never-produced vocab entries
"<|bpe_filler_N|>" and adds 151643..151705 as special tokens (the 8 at their real ids, "<|extra_N|>"
between): `tokenizers` gives added tokens contiguous ids after the model vocab and cannot leave
gaps.
DIR gets tokenizer/, qwen3_asr_real_hf/ (one 3.1 GB model.safetensors) and qwen3_asr_real_orig/
(2 shards, 3.7 GB with the stored lm_head); tests/golden/qwen3_asr_real_<clip>.npz/.json are
summaries.
Goldens (tests/golden/README.md lists the keys): per clip qwen3_asr_tiny_<clip>.npz/.json;
qwen3_aligner_tiny_jfk.npz/.json; qwen3_asr_tiny_bf16.npz; qwen3_asr_env.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TINY_DIR = REPO / "tests" / "tiny"
GOLDEN_DIR = REPO / "tests" / "golden"
TOK_NAME = "qwen3_asr_tokenizer"

# ----------------------------------------------------------------------------------------------
# Synthetic Qwen2-style byte-level BPE tokenizer
# ----------------------------------------------------------------------------------------------

QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
BPE_VOCAB_SIZE = 2000  # byte alphabet (256) + merges
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio_pad|>",
    "<asr_text>",
    "<timestamp>",
]
LANGUAGE_NAMES = [
    "Chinese",
    "English",
    "Cantonese",
    "Arabic",
    "German",
    "French",
    "Spanish",
    "Portuguese",
    "Indonesian",
    "Italian",
    "Korean",
    "Russian",
    "Thai",
    "Vietnamese",
    "Japanese",
    "Turkish",
    "Hindi",
    "Malay",
    "Dutch",
    "Swedish",
    "Danish",
    "Finnish",
    "Polish",
    "Czech",
    "Filipino",
    "Persian",
    "Greek",
    "Romanian",
    "Hungarian",
    "Macedonian",
]

CORPUS = (
    "And so my fellow Americans, ask not what your country can do for you,"
    " ask what you can do for your country.\n"
    "We choose to go to the Moon in this decade and do the other things,"
    " not because they are easy, but because they are hard.\n"
    "The quick brown fox jumps over the lazy dog. She sells sea shells by"
    " the sea shore.\n"
    "It was the best of times, it was the worst of times, it was the age"
    " of wisdom, it was the age of foolishness.\n"
    "I can't believe it's already 2025! We'll meet at 10:30 on Friday, the"
    " 3rd of March, at 221B Baker Street.\n"
    "Kennedy spoke in Boston and later flew to Moscow; the speech was"
    " broadcast on the radio and television.\n"
    "Speech recognition turns audio into text. The model listens to the"
    " sound and writes down the words it hears.\n"
    "Hello, world! How are you doing today? I'm fine, thanks. What's the"
    " weather like in London? They've gone, you'd see, he'll come.\n"
    "The numbers are 0 1 2 3 4 5 6 7 8 9, 10, 42, 100, 3.14159, 1,000,000"
    " and 2+2=4.\n"
    "Please transcribe the following recording accurately, keeping"
    " punctuation, names and numbers.\n"
    "Съешь же ещё этих мягких французских булок, да выпей чаю.\n"
    "Барсук, живущий в киевском зоопарке, совершил побег из своего"
    " вольера.\n"
    "Нейронные сети это хорошо. Распознавание речи превращает звук в"
    " текст.\n"
    "Москва — столица России. Сегодня хорошая погода, и мы идём гулять в"
    " парк.\n"
    "Привет! Как дела? Всё отлично, спасибо. Где находится вокзал?\n"
    "Der schnelle braune Fuchs springt über den faulen Hund. Zwölf"
    " Boxkämpfer jagen Viktor quer über den großen Sylter Deich.\n"
    "Guten Morgen! Wie geht es Ihnen? Ich möchte gerne einen Kaffee und"
    " ein Stück Kuchen bestellen.\n"
    "Die Spracherkennung wandelt gesprochene Sprache in Text um. Straße,"
    " Größe, Übung, Äpfel, Öl.\n"
    "Portez ce vieux whisky au juge blond qui fume. Voix ambiguë d'un cœur"
    " qui, au zéphyr, préfère les jattes de kiwis.\n"
    "Bonjour, comment ça va ? Je voudrais un café, s'il vous plaît. C'est"
    " très gentil, merci beaucoup.\n"
    "La reconnaissance vocale transforme la parole en texte. Où est la"
    " gare ? À bientôt, élève, garçon, Noël.\n"
    "我们今天去公园散步，天气非常好。语音识别把声音转换成文字。\n"
    "你好，世界！北京是中国的首都。我喜欢学习新的语言和文化。\n"
    "人工智能正在改变我们的生活，大家都很高兴。一二三四五六七八九十。\n"
    "こんにちは、世界！今日はとても良い天気ですね。音声認識は音声をテキストに変換します。\n"
    "東京は日本の首都です。私は毎朝コーヒーを飲みます。ありがとうございます。カタカナ、ひらがな、漢字。\n"
    "مرحبا بالعالم! كيف حالك اليوم؟ التعرف على الكلام يحول الصوت إلى نص.\n"
    "القاهرة هي عاصمة مصر. أحب قراءة الكتب وتعلم اللغات الجديدة.\n"
    "Emoji test: 😀 😂 👍 🎉 ❤️ 🚀 🌍 🐱 🍕 ✅ — done! 👋🏽 👨‍👩‍👧\n"
    "Tabs\tand  double  spaces, new\n"
    "lines, \"quotes\", 'single', (parens), [brackets], {braces}, <angles>,"
    " a/b\\c, 50% off, $9.99, €5, £3, #tag, @user, ~tilde~, ^caret, &amp;,"
    " *star*, _under_, |pipe|, `tick`.\n"
    "Ελληνικά, 한국어 안녕하세요, हिन्दी नमस्ते, ไทย สวัสดี, Tiếng Việt xin chào,"
    " Türkçe merhaba, Polski cześć, Čeština ahoj.\n"
)


def corpus_lines() -> list[str]:
    """The training text: CORPUS, the manifest transcripts, and the chat-template words repeated."""
    lines = CORPUS.splitlines()
    with open(DATA / "manifest.tsv", encoding="utf-8") as f:
        rows = [r.rstrip("\n").split("\t") for r in f][1:]
    lines += [r[4] for r in rows if len(r) > 4 and r[4]]
    # Chat-template words and language names: repeated so they become single tokens.
    for _ in range(40):
        lines += ["system\nuser\nassistant\n", "\nsystem\n", "\nuser\n", "\nassistant\n"]
        lines += [f"language {name}" for name in LANGUAGE_NAMES]
        lines += [" ".join(LANGUAGE_NAMES), "language None"]
    return lines


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / Qwen2 byte -> printable char map (the ByteLevel alphabet), in GPT-2's order."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _configure(tok):
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors

    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )


def build_tokenizer(out_dir: Path) -> dict:
    """Train the BPE (deterministic: fixed corpus, single thread) and write the Qwen2 file layout.

    Ids: the 256 byte tokens in GPT-2's bytes_to_unicode order (0..255, as in Qwen2's vocab.json),
    then one token per merge in merge order (256..), then the special tokens as added tokens.
    """
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(
        models.BPE(
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    _configure(tok)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    trained = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]

    # Renumber: bytes in GPT-2 order, then merges in rank order.
    vocab: dict[str, int] = {}
    for ch in _bytes_to_unicode().values():
        vocab[ch] = len(vocab)
    for a, b in merges:
        assert a in vocab and b in vocab, (a, b)
        assert a + b not in vocab, a + b
        vocab[a + b] = len(vocab)
    assert set(vocab) == set(trained["vocab"]), "renumbered vocab differs from the trained one"

    final = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
            dropout=None,
        )
    )
    _configure(final)
    final.add_special_tokens(
        [
            AddedToken(
                t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True
            )
            for t in SPECIAL_TOKENS
        ]
    )
    ids = {t: final.token_to_id(t) for t in SPECIAL_TOKENS}
    assert [ids[t] for t in SPECIAL_TOKENS] == list(
        range(len(vocab), len(vocab) + len(SPECIAL_TOKENS))
    ), ids

    out_dir.mkdir(parents=True, exist_ok=True)
    tj = json.loads(final.to_str())
    with open(out_dir / "tokenizer.json", "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=2)
        f.write("\n")
    with open(out_dir / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(out_dir / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    added = {
        str(ids[t]): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    cfg = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": SPECIAL_TOKENS[1:],
        "audio_bos_token": "<|audio_start|>",
        "audio_eos_token": "<|audio_end|>",
        "audio_token": "<|audio_pad|>",
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "extra_special_tokens": {
            "audio_bos_token": "<|audio_start|>",
            "audio_eos_token": "<|audio_end|>",
            "audio_token": "<|audio_pad|>",
        },
        "model_max_length": 65536,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    with open(out_dir / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False, indent=2)
        f.write("\n")
    return {"vocab_size": len(vocab) + len(SPECIAL_TOKENS), "bpe_size": len(vocab), "ids": ids}


TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")


def load_tokenizer(tok_dir: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tok_dir / "tokenizer.json"))


# ----------------------------------------------------------------------------------------------
# Audio
# ----------------------------------------------------------------------------------------------

CLIPS = {  # name -> file in shared/data
    "austen0890": "en_psphinx-austen-0890.wav",
    "jfk": "jfk.flac",
    "ru1": "ru_sherpa-qwen3-ru1.wav",
}


RESAMPLED = (
    "jfk",
)  # clips not at 16 kHz: their 16 kHz samples are stored in the goldens as `audio`


def load_clip(name: str) -> np.ndarray:
    """16 kHz mono float32. soundfile reads float64 in [-1, 1) (int PCM / 2^(bits-1)); channels are
    averaged; a file at another rate is resampled with scipy.signal.resample_poly(x, up, down) with
    up/down = 16000/sr reduced (jfk: 160/441, SciPy's default Kaiser(5.0) FIR), in float64, then
    cast
    to float32. The result is stored in each golden as `audio`."""
    import soundfile as sf

    x, sr = sf.read(str(DATA / CLIPS[name]), dtype="float64", always_2d=True)
    x = x.mean(axis=1)
    if sr != 16000:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(16000, sr)
        x = resample_poly(x, 16000 // g, sr // g)
    return np.ascontiguousarray(x, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------

TINY = dict(
    audio=dict(
        num_mel_bins=128,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=128,
        d_model=64,
        n_window=50,
        n_window_infer=800,
        downsample_hidden_size=16,
        output_dim=64,
    ),
    text=dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
    ),
)
REAL = dict(  # Qwen3-ASR-0.6B, REFERENCE.md §3.1
    audio=dict(
        num_mel_bins=128,
        encoder_layers=18,
        encoder_attention_heads=14,
        encoder_ffn_dim=3584,
        d_model=896,
        n_window=50,
        n_window_infer=800,
        downsample_hidden_size=480,
        output_dim=1024,
    ),
    text=dict(
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
    ),
)
ROPE_THETA = 1_000_000.0
RMS_EPS = 1e-6
MAX_POS = 65536


def special_ids(tok) -> dict:
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    assert all(v is not None for v in ids.values()), ids
    return ids


def hf_config(dims: dict, vocab_size: int, ids: dict, num_labels: int | None = None):
    from transformers import Qwen3ASRConfig

    kw = {}
    if num_labels is not None:
        kw["num_labels"] = num_labels
    return Qwen3ASRConfig(
        audio_config=dict(dims["audio"], max_position_embeddings=13),
        text_config=dict(
            dims["text"],
            vocab_size=vocab_size,
            rms_norm_eps=RMS_EPS,
            tie_word_embeddings=True,
            max_position_embeddings=MAX_POS,
            rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=None,
        ),
        audio_token_id=ids["<|audio_pad|>"],
        timestamp_token_id=ids["<timestamp>"],
        # transformers' defaults are pad 151645 (<|im_end|>) and eos (151643, 151645): the same
        # tokens here.
        pad_token_id=ids["<|im_end|>"],
        eos_token_id=[ids["<|endoftext|>"], ids["<|im_end|>"]],
        tie_word_embeddings=True,
        **kw,
    )


def orig_config(dims: dict, vocab_size: int, ids: dict, user_id: int, dtype: str) -> dict:
    """config.json in the original Qwen/Qwen3-ASR layout (qwen-asr 0.0.6 `Qwen3ASRConfig`: every
    __init__ argument of its four config classes, with the wrong class defaults corrected:
    n_window 50, n_window_infer 800, rope_theta 1e6, audio token ids from the tokenizer)."""
    a, t = dims["audio"], dims["text"]
    hd = t["head_dim"]
    # qwen-asr calls rope_scaling.get("mrope_section"); the real 0.6B/1.7B use [24, 20, 20] for
    # head_dim 128 (sum = head_dim / 2). All three position rows are equal, so it is 1-D RoPE.
    sec = [24, 20, 20] if hd == 128 else [hd // 4, hd // 8, hd // 8]
    assert sum(sec) == hd // 2
    return {
        "architectures": ["Qwen3ASRForConditionalGeneration"],
        "model_type": "qwen3_asr",
        "support_languages": LANGUAGE_NAMES,
        "thinker_config": {
            "audio_config": {
                "model_type": "qwen3_asr_audio_encoder",
                "num_mel_bins": a["num_mel_bins"],
                "encoder_layers": a["encoder_layers"],
                "encoder_attention_heads": a["encoder_attention_heads"],
                "encoder_ffn_dim": a["encoder_ffn_dim"],
                "d_model": a["d_model"],
                "dropout": 0.0,
                "attention_dropout": 0.0,
                "activation_function": "gelu",
                "activation_dropout": 0.0,
                "scale_embedding": False,
                "initializer_range": 0.02,
                "max_source_positions": 1500,
                "n_window": a["n_window"],
                "output_dim": a["output_dim"],
                "n_window_infer": a["n_window_infer"],
                "conv_chunksize": 500,
                "downsample_hidden_size": a["downsample_hidden_size"],
            },
            "text_config": {
                "model_type": "qwen3_asr_text",
                "vocab_size": vocab_size,
                "hidden_size": t["hidden_size"],
                "intermediate_size": t["intermediate_size"],
                "num_hidden_layers": t["num_hidden_layers"],
                "num_attention_heads": t["num_attention_heads"],
                "num_key_value_heads": t["num_key_value_heads"],
                "head_dim": hd,
                "hidden_act": "silu",
                "max_position_embeddings": MAX_POS,
                "initializer_range": 0.02,
                "rms_norm_eps": RMS_EPS,
                "use_cache": True,
                "tie_word_embeddings": True,
                "rope_theta": ROPE_THETA,
                "rope_scaling": {
                    "rope_type": "default",
                    "mrope_section": sec,
                    "interleaved": True,
                    "mrope_interleaved": True,
                },
                "attention_bias": False,
                "attention_dropout": 0.0,
            },
            "audio_token_id": ids["<|audio_pad|>"],
            "audio_start_token_id": ids["<|audio_start|>"],
            "user_token_id": user_id,
            "initializer_range": 0.02,
            "model_type": "qwen3_asr_thinker",
            "dtype": dtype,
        },
        "dtype": dtype,
    }


ORIG_PREPROCESSOR = {  # WhisperFeatureExtractor, as the original repos ship it
    "chunk_length": 30,
    "dither": 0.0,
    "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 128,
    "hop_length": 160,
    "n_fft": 400,
    "n_samples": 480000,
    "nb_max_frames": 3000,
    "padding_side": "right",
    "padding_value": 0.0,
    "processor_class": "Qwen3ASRProcessor",
    "return_attention_mask": True,
    "sampling_rate": 16000,
}


# ----------------------------------------------------------------------------------------------
# Random weights
# ----------------------------------------------------------------------------------------------


def randomize_(model, seed: int) -> None:
    """REFERENCE-SETUP §0: every parameter (buffers such as the sinusoid table and inv_freq are
    left)
    redrawn in named_parameters() order from one seeded generator: matrices and conv kernels
    N(0, 1/fan_in) (fan_in = prod(shape[1:]); embeddings [V, H]: 1/H), 1-D weights 1 + 0.1 N,
    biases 0.1 N."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(fan_in))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))


EOS_ROW_SCALE = 0.05
EMBED_SCALE = 2.0
DOWN_PROJ_SCALE = 8.0


def rebalance_(model, ids: dict, seed: int) -> None:
    """Make greedy decoding of the random LLM non-degenerate (REFERENCE-SETUP §0 says random heads
    are
    degenerate; here a random tied-embedding LLM repeats one token or a 2-cycle forever):
      - embed_tokens x EMBED_SCALE (rows N(0, 4/H)): the current token, not the slowly varying
        attention average over the context, drives the next prediction;
      - every mlp.down_proj x DOWN_PROJ_SCALE: the prediction is a non-linear (asymmetric)
        function of
        the token, so the token -> next-token map has long cycles instead of 2-cycles;
      - the final RMSNorm weight gets random signs (generator seeded with seed + 1000): with a tied
        head the current token's own logit is then ~0 instead of the largest (|e_t|^2);
      - the rows of <|endoftext|> and <|im_end|> x EOS_ROW_SCALE: EOS never wins within MAX_NEW
        steps."""
    import torch

    lm = model.model.language_model
    with torch.no_grad():
        lm.embed_tokens.weight *= EMBED_SCALE
        for layer in lm.layers:
            layer.mlp.down_proj.weight *= DOWN_PROJ_SCALE
        g = torch.Generator().manual_seed(seed + 1000)
        sign = (
            torch.randint(0, 2, lm.norm.weight.shape, generator=g).to(lm.norm.weight.dtype) * 2 - 1
        )
        lm.norm.weight *= sign
        for t in ("<|endoftext|>", "<|im_end|>"):
            lm.embed_tokens.weight[ids[t]] *= EOS_ROW_SCALE


def build_asr(dims: dict, vocab_size: int, ids: dict, seed: int):
    import torch
    from transformers import Qwen3ASRForConditionalGeneration

    cfg = hf_config(dims, vocab_size, ids)
    torch.manual_seed(seed)
    model = Qwen3ASRForConditionalGeneration(cfg).eval()
    randomize_(model, seed)
    emb = model.model.language_model.embed_tokens.weight
    assert model.lm_head.weight.data_ptr() == emb.data_ptr(), "lm_head is not tied"
    rebalance_(model, ids, seed)
    return model


# ----------------------------------------------------------------------------------------------
# Prompts (REFERENCE.md §3.5)
# ----------------------------------------------------------------------------------------------

PROMPTS = {  # name -> (context, forced language)
    "a": ("", None),
    "b": ("", "English"),
    "c": ("Kennedy Boston Moscow", None),
}


def prompt_text(context: str, language: str | None, n_audio: int) -> str:
    """The string qwen-asr's `_build_text_prompt` renders (chat template with a system turn holding
    the
    context and a user turn holding one audio, add_generation_prompt=True, then the forced-language
    prefill) after its processor expanded the one <|audio_pad|> into n_audio copies. Built by hand:
    the chat template is not shipped in the qwen-asr wheel."""
    s = (
        f"<|im_start|>system\n{context}<|im_end|>\n<|im_start|>user\n<|audio_start|>"
        + "<|audio_pad|>" * n_audio
        + "<|audio_end|><|im_end|>\n<|im_start|>assistant\n"
    )
    if language:
        s += f"language {language}<asr_text>"
    return s


def features(audio: np.ndarray):
    from transformers import Qwen3ASRFeatureExtractor

    fe = Qwen3ASRFeatureExtractor()
    f = fe(
        audio, sampling_rate=16000, padding=True, return_attention_mask=True, return_tensors="pt"
    )
    return f["input_features"], f["attention_mask"]


def n_audio_tokens(n_mel: int) -> int:
    from transformers.models.qwen3_asr.modeling_qwen3_asr import _get_feat_extract_output_lengths

    return int(_get_feat_extract_output_lengths(np.int64(n_mel)))


def margins_of(logits_rows) -> tuple[np.ndarray, np.ndarray]:
    """(top1 - top2, (top1 - top2) / std(row)) per row."""
    x = np.asarray(logits_rows, dtype=np.float64)
    s = np.sort(x, axis=-1)
    m = s[:, -1] - s[:, -2]
    return m.astype(np.float32), (m / x.std(axis=-1)).astype(np.float32)


MAX_NEW = 80
MIN_REL_MARGIN = 1e-3
MIN_DISTINCT = 20  # of MAX_NEW greedy tokens, per clip and prompt
MAX_RUN = 10  # longest run of one repeated token


def run_clip(
    model, tok, audio: np.ndarray, max_new: int = MAX_NEW, full: bool = True
) -> tuple[dict, dict]:
    """Goldens of one clip: (npz arrays, json info)."""
    import torch

    feats, mask = features(audio)
    n_mel = int(mask.sum())
    n_audio = n_audio_tokens(n_mel)
    arrs: dict = {
        "audio_sha256": np.str_(sha256(audio)),
        "mel": feats[0, :, :n_mel].numpy().astype(np.float32),
        "mel_padded_len": np.int64(feats.shape[-1]),
        "n_audio_tokens": np.int64(n_audio),
    }
    # mel padding must be zeros
    assert float(feats[0, :, n_mel:].abs().max() if feats.shape[-1] > n_mel else 0.0) == 0.0
    tower = model.model.audio_tower
    lm = model.model.language_model
    cap: dict = {}
    hooks = [
        tower.layers[0].register_forward_pre_hook(
            lambda m, a, kw=None: cap.__setitem__("pre", a[0].detach().clone())
        ),
        tower.layers[0].register_forward_hook(
            lambda m, a, o: cap.__setitem__(
                "l0", (o[0] if isinstance(o, tuple) else o).detach().clone()
            )
        ),
        tower.register_forward_hook(
            lambda m, a, o: cap.__setitem__("enc", o.last_hidden_state.detach().clone())
        ),
        lm.layers[0].register_forward_hook(
            lambda m, a, o: cap.__setitem__(
                "llm0", (o[0] if isinstance(o, tuple) else o).detach().clone()
            )
        ),
    ]
    info: dict = {
        "n_samples": int(audio.shape[0]),
        "n_mel": n_mel,
        "mel_padded_len": int(feats.shape[-1]),
        "n_audio_tokens": n_audio,
        "prompts": {},
    }
    try:
        with torch.no_grad():
            emb = model.model.get_audio_features(feats, mask, return_dict=True).pooler_output
            arrs["audio_pre_layer0"] = cap["pre"].numpy()
            arrs["audio_layer0"] = cap["l0"].numpy()
            arrs["audio_ln_post"] = cap["enc"].numpy()
            arrs["audio_embeds"] = emb.numpy()
            assert emb.shape[0] == n_audio, (emb.shape, n_audio)
            for p, (ctx, lang) in PROMPTS.items():
                text = prompt_text(ctx, lang, n_audio)
                ids = tok.encode(text).ids
                x = torch.tensor([ids])
                out = model(
                    input_ids=x,
                    input_features=feats,
                    input_features_mask=mask,
                    attention_mask=torch.ones_like(x),
                )
                arrs[f"prompt_ids_{p}"] = np.asarray(ids, dtype=np.int64)
                arrs[f"logits_first_{p}"] = out.logits[0, -1].numpy().astype(np.float32)
                if p == "a" and full:
                    arrs["llm_layer0_a"] = cap["llm0"][0].numpy()
                gen = model.generate(
                    input_ids=x,
                    input_features=feats,
                    input_features_mask=mask,
                    attention_mask=torch.ones_like(x),
                    do_sample=False,
                    max_new_tokens=max_new,
                    output_logits=True,
                    return_dict_in_generate=True,
                )
                new = gen.sequences[0, len(ids) :].numpy().astype(np.int64)
                steps = torch.cat([lg for lg in gen.logits], 0).numpy()
                assert np.array_equal(steps.argmax(-1)[: len(new)], new)
                mabs, mrel = margins_of(steps)
                d = float(np.abs(steps[0] - arrs[f"logits_first_{p}"]).max())
                arrs[f"tokens_{p}"] = new
                arrs[f"margins_{p}"] = mabs
                arrs[f"margins_rel_{p}"] = mrel
                info["prompts"][p] = {
                    "context": ctx,
                    "language": lang,
                    "prompt_text": text.replace(
                        "<|audio_pad|>" * n_audio, f"<|audio_pad|>*{n_audio}"
                    ),
                    "prompt_len": len(ids),
                    "tokens": new.tolist(),
                    "text_raw": tok.decode(new.tolist(), skip_special_tokens=False),
                    "text": tok.decode(new.tolist(), skip_special_tokens=True),
                    "min_margin": float(mabs.min()),
                    "min_margin_rel": float(mrel.min()),
                    "n_distinct": int(len(set(new.tolist()))),
                    "max_run": max_run(new),
                    "first_step_generate_vs_forward_maxdiff": d,
                }
    finally:
        for h in hooks:
            h.remove()
    return arrs, info


def sha256(audio: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()


def max_run(t) -> int:
    best = run = 1
    for i in range(1, len(t)):
        run = run + 1 if t[i] == t[i - 1] else 1
        best = max(best, run)
    return best


def quality_ok(
    infos: dict, ids: dict, min_new: int, require_variety: bool = True
) -> tuple[bool, str]:
    eos = {ids["<|endoftext|>"], ids["<|im_end|>"]}
    for clip, info in infos.items():
        for p, q in info["prompts"].items():
            toks = q["tokens"]
            first_eos = next((i for i, t in enumerate(toks) if t in eos), len(toks))
            if first_eos < min_new:
                return False, f"{clip}/{p}: EOS at step {first_eos}"
            if q["min_margin_rel"] < MIN_REL_MARGIN:
                return False, f"{clip}/{p}: margin {q['min_margin_rel']:.2e}"
            if require_variety and (q["n_distinct"] < MIN_DISTINCT or q["max_run"] > MAX_RUN):
                return (
                    False,
                    f"{clip}/{p}: degenerate ({q['n_distinct']} distinct, run {q['max_run']})",
                )
    return True, "ok"


# ----------------------------------------------------------------------------------------------
# Saving: transformers-native ("hf") and original Qwen/Qwen3-ASR ("orig") layouts
# ----------------------------------------------------------------------------------------------


def hf_to_orig_key(k: str) -> str:
    for a, b in (
        ("model.multi_modal_projector.linear_1.", "thinker.audio_tower.proj1."),
        ("model.multi_modal_projector.linear_2.", "thinker.audio_tower.proj2."),
        ("model.audio_tower.", "thinker.audio_tower."),
        ("model.language_model.", "thinker.model."),
        ("lm_head.", "thinker.lm_head."),
    ):
        if k.startswith(a):
            return b + k[len(a) :]
    raise KeyError(k)


def orig_to_hf_key(k: str) -> str:
    """The mapping of REFERENCE-SETUP §2b (what a converter does)."""
    for a, b in (
        ("thinker.audio_tower.proj1.", "model.multi_modal_projector.linear_1."),
        ("thinker.audio_tower.proj2.", "model.multi_modal_projector.linear_2."),
        ("thinker.audio_tower.", "model.audio_tower."),
        ("thinker.model.", "model.language_model."),
        ("thinker.lm_head.", "lm_head."),
    ):
        if k.startswith(a):
            return b + k[len(a) :]
    raise KeyError(k)


def copy_tokenizer(tok_dir: Path, out: Path, with_json: bool = True) -> None:
    """The original Qwen/Qwen3-ASR repos ship vocab.json + merges.txt + tokenizer_config.json and no
    tokenizer.json (REFERENCE.md §3.1); the -hf layout has tokenizer.json too."""
    for f in TOKENIZER_FILES:
        if with_json or f != "tokenizer.json":
            shutil.copyfile(tok_dir / f, out / f)


def write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def save_hf(model, tok_dir: Path, out: Path) -> None:
    from safetensors import safe_open
    from transformers import Qwen3ASRFeatureExtractor

    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out, safe_serialization=True)
    Qwen3ASRFeatureExtractor().save_pretrained(out)
    copy_tokenizer(tok_dir, out)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys and "model.language_model.embed_tokens.weight" in keys


def save_hf_bf16(hf_dir: Path, out: Path) -> None:
    """bf16 copy of the hf layout (weights rounded to nearest even by torch's .to(bfloat16))."""
    import torch
    from safetensors.torch import load_file, save_file

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    sd = load_file(str(hf_dir / "model.safetensors"))
    save_file(
        {k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["dtype"] = "bfloat16"
    write_json(out / "config.json", cfg)
    for f in ("preprocessor_config.json", "generation_config.json", *TOKENIZER_FILES):
        if (
            hf_dir / f
        ).exists() and f != "tokenizer.json":  # this copy also tests "no tokenizer.json"
            shutil.copyfile(hf_dir / f, out / f)


def save_orig(model, dims: dict, ids: dict, user_id: int, tok_dir: Path | None, out: Path) -> None:
    """Original layout: thinker.* keys, a stored thinker.lm_head.weight (a copy of the embedding),
    two shards (audio tower | LLM + head) and model.safetensors.index.json."""
    from safetensors.torch import save_file

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    sd = {hf_to_orig_key(k): v.detach().contiguous() for k, v in model.state_dict().items()}
    sd["thinker.lm_head.weight"] = sd["thinker.model.embed_tokens.weight"].clone()
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    shards = [
        {k: v for k, v in sd.items() if k.startswith("thinker.audio_tower.")},
        {k: v for k, v in sd.items() if not k.startswith("thinker.audio_tower.")},
    ]
    weight_map = {}
    for name, shard in zip(names, shards, strict=True):
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    write_json(
        out / "model.safetensors.index.json",
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
    )
    dtype = str(next(iter(sd.values())).dtype).replace("torch.", "")
    write_json(
        out / "config.json",
        orig_config(dims, model.config.text_config.vocab_size, ids, user_id, dtype),
    )
    write_json(out / "preprocessor_config.json", ORIG_PREPROCESSOR)
    if tok_dir is not None:
        copy_tokenizer(tok_dir, out, with_json=False)


def load_orig_into_hf(orig_dir: Path, dims: dict, ids: dict):
    """Reload the orig layout through the documented key mapping into a fresh transformers model
    (strict: no missing / unexpected keys; lm_head must equal the embedding)."""
    import torch
    from safetensors.torch import load_file
    from transformers import Qwen3ASRForConditionalGeneration

    cfg = json.loads((orig_dir / "config.json").read_text())
    idx = json.loads((orig_dir / "model.safetensors.index.json").read_text())
    sd = {}
    for name in sorted(set(idx["weight_map"].values())):
        sd.update(load_file(str(orig_dir / name)))
    assert set(sd) == set(idx["weight_map"])
    head = sd.pop("thinker.lm_head.weight")
    assert torch.equal(head, sd["thinker.model.embed_tokens.weight"])
    tc = cfg["thinker_config"]["text_config"]
    m = Qwen3ASRForConditionalGeneration(hf_config(dims, tc["vocab_size"], ids)).eval()
    missing, unexpected = m.load_state_dict(
        {orig_to_hf_key(k): v for k, v in sd.items()}, strict=False
    )
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    m.tie_weights()
    return m


# ----------------------------------------------------------------------------------------------
# Forced aligner (Qwen3ASRForTokenClassification)
# ----------------------------------------------------------------------------------------------

ALIGNER_CLASSES = 256  # classify_num (the real aligner has 5000); 256 x 80 ms = 20.5 s
TIMESTAMP_SEGMENT_TIME = 80
ALIGNER_CLIP = "jfk"


def qwen_asr_force_align_processor():
    """qwen-asr 0.0.6's Qwen3ForceAlignProcessor, taken from the installed package's source with
    `ast`
    (importing the module needs nagisa, soynlp and qwen-asr's transformers-4.57 backend)."""
    import ast
    import importlib.util
    import typing
    import unicodedata

    spec = importlib.util.find_spec("qwen_asr")
    path = Path(list(spec.submodule_search_locations)[0]) / "inference" / "qwen3_forced_aligner.py"
    src = path.read_text(encoding="utf-8")
    node = next(
        n
        for n in ast.parse(src).body
        if isinstance(n, ast.ClassDef) and n.name == "Qwen3ForceAlignProcessor"
    )
    ns = {
        "os": os,
        "unicodedata": unicodedata,
        # the names the class's annotations use
        **{n: getattr(typing, n) for n in ("List", "Dict", "Any", "Optional", "Union")},
        "__file__": str(path),
    }
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), ns)
    return ns["Qwen3ForceAlignProcessor"]()


def manifest_transcript(fname: str) -> str:
    with open(DATA / "manifest.tsv", encoding="utf-8") as f:
        for row in f:
            r = row.rstrip("\n").split("\t")
            if r[0] == fname:
                return r[4]
    raise KeyError(fname)


def build_aligner(dims: dict, vocab_size: int, ids: dict, seed: int):
    import torch
    from transformers import Qwen3ASRForTokenClassification

    cfg = hf_config(dims, vocab_size, ids, num_labels=ALIGNER_CLASSES)
    torch.manual_seed(seed)
    model = Qwen3ASRForTokenClassification(cfg).eval()
    randomize_(model, seed)
    return model


def aligner_target(n_ts: int) -> np.ndarray:
    """Designed timestamp classes (80 ms units) for the n_ts <timestamp> positions: word i spans
    [4 + 6i, 8 + 6i], with outliers that exercise every branch of fix_timestamp: a single one
    (snapped), a pair (snapped to the nearer neighbours), a run of 4 (linearly interpolated) and a
    too-large last value."""
    y = np.array([4 + 6 * (i // 2) + 4 * (i % 2) for i in range(n_ts)], dtype=np.int64)
    y[5] = 120
    y[12], y[13] = 1, 0
    y[20:24] = 130
    y[-1] = ALIGNER_CLASSES - 1
    return np.clip(y, 0, ALIGNER_CLASSES - 1)


def balance_aligner_head_(model, x, feats, mask, pos) -> None:
    """Random score heads give one class at every <timestamp> position. Refit score.weight (no bias)
    by ridge least squares on the final hidden states at the timestamp positions so that the
    logits there are -|c - y_k| / 4 (peaked at the designed class y_k of aligner_target)."""
    import torch

    with torch.no_grad():
        h = (
            model.model(
                input_ids=x,
                input_features=feats,
                input_features_mask=mask,
                attention_mask=torch.ones_like(x),
            )
            .last_hidden_state[0, pos]
            .double()
            .numpy()
        )
    y = aligner_target(len(pos))
    c = np.arange(ALIGNER_CLASSES)
    t = -np.abs(c[None, :] - y[:, None]) / 4.0
    lam = 1e-5 * np.trace(h.T @ h) / h.shape[1]
    w = np.linalg.solve(h.T @ h + lam * np.eye(h.shape[1]), h.T @ t)  # (H, C)
    with torch.no_grad():
        model.score.weight.copy_(torch.from_numpy(w.T).float())


def run_aligner(model, tok, audio: np.ndarray, transcript: str, balance: bool) -> tuple[dict, dict]:
    import torch
    from transformers.models.qwen3_asr.processing_qwen3_asr import _fix_timestamps

    fap = qwen_asr_force_align_processor()
    words, text = fap.encode_timestamp(transcript, "English")
    feats, mask = features(audio)
    n_mel = int(mask.sum())
    n_audio = n_audio_tokens(n_mel)
    # qwen-asr's processor expands the one <|audio_pad|> into n_audio copies, then tokenizes
    full = text.replace("<|audio_pad|>", "<|audio_pad|>" * n_audio, 1)
    ids_ = tok.encode(full).ids
    x = torch.tensor([ids_])
    with torch.no_grad():
        logits = model(
            input_ids=x,
            input_features=feats,
            input_features_mask=mask,
            attention_mask=torch.ones_like(x),
        ).logits[0]
    ts_id = model.config.timestamp_token_id
    pos = np.nonzero(np.asarray(ids_) == ts_id)[0]
    if balance:
        balance_aligner_head_(model, x, feats, mask, pos)
        with torch.no_grad():
            logits = model(
                input_ids=x,
                input_features=feats,
                input_features_mask=mask,
                attention_mask=torch.ones_like(x),
            ).logits[0]
        assert np.array_equal(logits[pos].argmax(-1).numpy(), aligner_target(len(pos))), (
            "aligner balance failed"
        )
    lt = logits[pos].numpy().astype(np.float32)
    am = lt.argmax(-1).astype(np.int64)
    raw_ms = (torch.from_numpy(am) * TIMESTAMP_SEGMENT_TIME).numpy()  # int64, as qwen-asr (id * 80)
    fixed = np.asarray(fap.fix_timestamp(raw_ms), dtype=np.float64)
    fixed_hf = np.asarray(_fix_timestamps(raw_ms.astype(np.float32)), dtype=np.float64)
    items = fap.parse_timestamp(words, raw_ms)
    for it in items:
        it["start_time"] = round(float(it["start_time"]) / 1000.0, 3)
        it["end_time"] = round(float(it["end_time"]) / 1000.0, 3)
    mabs, mrel = margins_of(lt)
    arrs = {
        "audio_sha256": np.str_(sha256(audio)),
        "input_ids": np.asarray(ids_, dtype=np.int64),
        "timestamp_positions": pos.astype(np.int64),
        "logits_ts": lt,
        "argmax_ts": am,
        "raw_ms": raw_ms.astype(np.int64),
        "fixed_ms": fixed,
        "margins_ts": mabs,
    }
    info = {
        "transcript": transcript,
        "words": words,
        "aligner_text": text,
        "n_audio_tokens": n_audio,
        "timestamp_token_id": ts_id,
        "timestamp_segment_time": TIMESTAMP_SEGMENT_TIME,
        "classify_num": ALIGNER_CLASSES,
        "argmax": am.tolist(),
        "raw_ms": raw_ms.tolist(),
        "fixed_ms": fixed.tolist(),
        "fixed_ms_transformers": fixed_hf.tolist(),
        "fix_equal_in_transformers": bool(np.array_equal(fixed, fixed_hf)),
        "items": items,
        "min_margin": float(mabs.min()),
        "min_margin_rel": float(mrel.min()),
    }
    return arrs, info


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------

ASR_SEEDS = range(0, 200)  # the first seed whose model passes quality_ok is used
ALIGNER_SEED = 0
MIN_NEW_BEFORE_EOS = 64


def versions() -> dict:
    import scipy
    import soundfile
    import tokenizers
    import torch
    import transformers

    v = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "soundfile": soundfile.__version__,
        "libsndfile": soundfile.__libsndfile_version__,
    }
    try:
        from importlib.metadata import version

        v["qwen-asr"] = version("qwen-asr")
        v["safetensors"] = version("safetensors")
    except Exception:  # pragma: no cover
        pass
    return v


def search_asr(dims, vocab, ids, tok, audios, seeds, max_new, min_new, log=print):
    tried = []
    for seed in seeds:
        model = build_asr(dims, vocab, ids, seed)
        results = {c: run_clip(model, tok, a, max_new=max_new) for c, a in audios.items()}
        ok, why = quality_ok({c: r[1] for c, r in results.items()}, ids, min_new)
        log(f"  seed {seed}: {why}")
        if ok:
            return seed, model, results
        tried.append(seed)
    raise RuntimeError("no seed passed quality_ok")


def save_npz(path: Path, arrs: dict) -> None:
    np.savez_compressed(path, **arrs)


def make_tiny(tiny_dir: Path, golden_dir: Path, seed_start: int = 0, log=print) -> dict:
    import torch

    torch.set_num_threads(1)
    tiny_dir.mkdir(parents=True, exist_ok=True)
    golden_dir.mkdir(parents=True, exist_ok=True)
    tok_dir = tiny_dir / TOK_NAME
    tinfo = build_tokenizer(tok_dir)
    tok = load_tokenizer(tok_dir)
    ids = special_ids(tok)
    vocab = tok.get_vocab_size()
    user_id = tok.token_to_id("user")
    log(f"tokenizer: {vocab} tokens, specials {ids}")
    audios = {c: load_clip(c) for c in CLIPS}
    seeds = range(seed_start, ASR_SEEDS.stop)
    seed, model, results = search_asr(
        TINY, vocab, ids, tok, audios, seeds, MAX_NEW, MIN_NEW_BEFORE_EOS, log
    )
    hf_dir, orig_dir, bf_dir = (
        tiny_dir / "qwen3_asr_tiny_hf",
        tiny_dir / "qwen3_asr_tiny_orig",
        tiny_dir / "qwen3_asr_tiny_hf_bf16",
    )
    save_hf(model, tok_dir, hf_dir)
    save_hf_bf16(hf_dir, bf_dir)
    save_orig(model, TINY, ids, user_id, tok_dir, orig_dir)
    # both layouts reload to the same weights and the same logits
    from transformers import Qwen3ASRForConditionalGeneration

    m_hf = Qwen3ASRForConditionalGeneration.from_pretrained(hf_dir).eval()
    m_orig = load_orig_into_hf(orig_dir, TINY, ids)
    sd = model.state_dict()
    for m in (m_hf, m_orig):
        assert all(torch.equal(sd[k], m.state_dict()[k]) for k in sd)
        assert m.lm_head.weight.data_ptr() == m.model.language_model.embed_tokens.weight.data_ptr()
    summary = {"seed": seed, "clips": {}}
    for clip, (arrs, info) in results.items():
        arrs2, _ = run_clip(m_orig, tok, audios[clip], max_new=2, full=False)
        assert np.array_equal(arrs2["logits_first_a"], arrs["logits_first_a"]), (
            "orig layout reload differs"
        )
        if (
            clip in RESAMPLED
        ):  # the wav clips are read exactly (int16 / 32768); jfk's resampling is stored
            arrs = {"audio": audios[clip], **arrs}  # noqa: PLW2901
        save_npz(golden_dir / f"qwen3_asr_tiny_{clip}.npz", arrs)
        info.update({"clip": CLIPS[clip], "seed": seed})
        write_json(golden_dir / f"qwen3_asr_tiny_{clip}.json", info)
        summary["clips"][clip] = {
            p: {
                "min_margin_rel": q["min_margin_rel"],
                "n_distinct": q["n_distinct"],
                "text": q["text"][:60],
            }
            for p, q in info["prompts"].items()
        }
    # bf16 copy: first-step logits of prompt a (float32 compute on the bf16-rounded weights)
    m_bf = Qwen3ASRForConditionalGeneration.from_pretrained(bf_dir, dtype=torch.float32).eval()
    bf = {}
    for clip in CLIPS:
        a2, i2 = run_clip(m_bf, tok, audios[clip], max_new=MAX_NEW, full=False)
        bf[f"logits_first_a_{clip}"] = a2["logits_first_a"]
        bf[f"tokens_a_{clip}"] = a2["tokens_a"]
        bf[f"margins_rel_a_{clip}"] = a2["margins_rel_a"]
    save_npz(golden_dir / "qwen3_asr_tiny_bf16.npz", bf)
    # forced aligner
    al = build_aligner(TINY, vocab, ids, ALIGNER_SEED)
    al_arrs, al_info = run_aligner(
        al, tok, audios[ALIGNER_CLIP], manifest_transcript(CLIPS[ALIGNER_CLIP]), True
    )
    al_dir = tiny_dir / "qwen3_aligner_tiny_hf"
    if al_dir.exists():
        shutil.rmtree(al_dir)
    al.save_pretrained(al_dir, safe_serialization=True)
    from transformers import Qwen3ASRFeatureExtractor, Qwen3ASRForTokenClassification

    Qwen3ASRFeatureExtractor().save_pretrained(al_dir)
    copy_tokenizer(tok_dir, al_dir)
    al2 = Qwen3ASRForTokenClassification.from_pretrained(al_dir).eval()
    a3, _ = run_aligner(
        al2, tok, audios[ALIGNER_CLIP], manifest_transcript(CLIPS[ALIGNER_CLIP]), False
    )
    assert np.array_equal(a3["logits_ts"], al_arrs["logits_ts"]), "aligner reload differs"
    save_npz(golden_dir / f"qwen3_aligner_tiny_{ALIGNER_CLIP}.npz", al_arrs)
    al_info.update({"clip": CLIPS[ALIGNER_CLIP], "seed": ALIGNER_SEED})
    write_json(golden_dir / f"qwen3_aligner_tiny_{ALIGNER_CLIP}.json", al_info)
    env = {
        "versions": versions(),
        "torch_threads": 1,
        "asr_seed": seed,
        "aligner_seed": ALIGNER_SEED,
        "asr_seed_search": f"first seed in range({ASR_SEEDS.start}, {ASR_SEEDS.stop}) "
        "passing quality_ok",
        "tokenizer": tinfo,
        "rebalance": {
            "EOS_ROW_SCALE": EOS_ROW_SCALE,
            "EMBED_SCALE": EMBED_SCALE,
            "DOWN_PROJ_SCALE": DOWN_PROJ_SCALE,
            "final_norm_sign_seed": seed + 1000,
        },
        "criteria": {
            "MIN_REL_MARGIN": MIN_REL_MARGIN,
            "MIN_DISTINCT": MIN_DISTINCT,
            "MAX_RUN": MAX_RUN,
            "MIN_NEW_BEFORE_EOS": MIN_NEW_BEFORE_EOS,
            "MAX_NEW": MAX_NEW,
        },
        "tiny_dims": TINY,
        "aligner_classes": ALIGNER_CLASSES,
    }
    write_json(golden_dir / "qwen3_asr_env.json", env)
    summary["aligner"] = {"min_margin_rel": al_info["min_margin_rel"]}
    return summary


# ----------------------------------------------------------------------------------------------
# Real size (--real DIR)
# ----------------------------------------------------------------------------------------------

REAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|audio_start|>": 151669,
    "<|audio_end|>": 151670,
    "<|audio_pad|>": 151676,
    "<asr_text>": 151704,
    "<timestamp>": 151705,
}
REAL_VOCAB = 151936
REAL_SEEDS = range(0, 50)
REAL_MAX_NEW = 72
SUMMARY_COLS = 16
LOGIT_STRIDE = 37
TOPK = 64


def build_real_tokenizer(tiny_tok: Path, out: Path) -> dict:
    """The synthetic BPE (ids 0..1999) padded with never-produced filler vocab entries
    "<|bpe_filler_N|>" up to 151642, so that the added tokens start at 151643 as in Qwen2/Qwen3; the
    added tokens 151643..151705 hold the 8 specials at their real ids and "<|extra_N|>" in between
    (tokenizers assigns added-token ids contiguously after the model vocab; it cannot leave
    gaps)."""
    from tokenizers import AddedToken, Tokenizer, models

    vocab = json.loads((tiny_tok / "vocab.json").read_text(encoding="utf-8"))
    merges = [
        tuple(line.rstrip("\n").split(" "))
        for line in (tiny_tok / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
        if line
    ]
    first = min(REAL_IDS.values())
    for i in range(len(vocab), first):
        vocab[f"<|bpe_filler_{i}|>"] = i
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
            dropout=None,
        )
    )
    _configure(tok)
    by_id = {v: k for k, v in REAL_IDS.items()}
    added = [by_id.get(i, f"<|extra_{i}|>") for i in range(first, max(REAL_IDS.values()) + 1)]
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in added])
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    assert ids == REAL_IDS, ids
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    with open(out / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    shutil.copyfile(tiny_tok / "merges.txt", out / "merges.txt")
    cfg = json.loads((tiny_tok / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg["added_tokens_decoder"] = {
        str(first + i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(added)
    }
    write_json(out / "tokenizer_config.json", cfg)
    return ids


def summarize(arrs: dict) -> dict:
    out = {}
    for k, v in arrs.items():
        if k in ("mel",):
            continue  # equals the tiny golden's mel of the same clip (the front end has no weights)
        if k.startswith("logits_first_"):
            order = np.argsort(-v.astype(np.float64), kind="stable")[:TOPK]
            out[k + "_top_ids"] = order.astype(np.int64)
            out[k + "_top_vals"] = v[order]
            out[k + "_strided"] = v[::LOGIT_STRIDE]
            out[k + "_stats"] = np.array([v.mean(), v.std(), v.min(), v.max()], dtype=np.float64)
        elif k.startswith(
            ("audio_pre_layer0", "audio_layer0", "audio_ln_post", "audio_embeds", "llm_layer0")
        ):
            out[k + "_head"] = v[:, :SUMMARY_COLS]
            out[k + "_norm"] = np.linalg.norm(v.astype(np.float64), axis=1).astype(np.float32)
        else:
            out[k] = v
    return out


def make_real(out_dir: Path, clips: list[str], log=print) -> int:
    import time

    import torch

    torch.set_num_threads(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tiny_tok = TINY_DIR / TOK_NAME
    if not (tiny_tok / "vocab.json").exists():
        build_tokenizer(tiny_tok)
    tok_dir = out_dir / "tokenizer"
    ids = build_real_tokenizer(tiny_tok, tok_dir)
    tok = load_tokenizer(tok_dir)
    user_id = tok.token_to_id("user")
    audios = {c: load_clip(c) for c in clips}
    chosen = model = results = None
    for seed in REAL_SEEDS:
        model = build_asr(REAL, REAL_VOCAB, ids, seed)
        log(
            f"seed {seed}: built {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params "
            f"({time.time() - t0:.0f} s)"
        )
        results = {c: run_clip(model, tok, a, max_new=REAL_MAX_NEW) for c, a in audios.items()}
        infos = {c: r[1] for c, r in results.items()}
        # at real size only the margins and EOS decide (variety is reported, not required)
        ok, why = quality_ok(infos, ids, 64, require_variety=False)
        log(f"seed {seed}: {why} ({time.time() - t0:.0f} s)")
        if ok:
            chosen = seed
            break
        model = results = None  # free the rejected model before building the next
    if chosen is None:
        raise RuntimeError("no real seed passed")
    hf_dir, orig_dir = out_dir / "qwen3_asr_real_hf", out_dir / "qwen3_asr_real_orig"
    if hf_dir.exists():
        shutil.rmtree(hf_dir)
    model.save_pretrained(hf_dir, safe_serialization=True, max_shard_size="40GB")
    from transformers import Qwen3ASRFeatureExtractor

    Qwen3ASRFeatureExtractor().save_pretrained(hf_dir)
    copy_tokenizer(tok_dir, hf_dir)
    assert (hf_dir / "model.safetensors").exists()
    save_orig(model, REAL, ids, user_id, tok_dir, orig_dir)
    log(f"saved both layouts ({time.time() - t0:.0f} s)")
    sd = model.state_dict()
    m_orig = load_orig_into_hf(orig_dir, REAL, ids)
    assert all(torch.equal(sd[k], m_orig.state_dict()[k]) for k in sd), "orig layout reload differs"
    del m_orig
    env = {
        "versions": versions(),
        "torch_threads": 1,
        "seed": chosen,
        "dims": REAL,
        "vocab_size": REAL_VOCAB,
        "special_ids": ids,
        "user_token_id": user_id,
        "max_new": REAL_MAX_NEW,
    }
    for clip, (arrs, info) in results.items():
        summ = summarize(arrs)  # jfk's `audio` is in the tiny golden (audio_sha256 ties them)
        save_npz(GOLDEN_DIR / f"qwen3_asr_real_{clip}.npz", summ)
        info.update({"clip": CLIPS[clip], "seed": chosen, "env": env})
        write_json(GOLDEN_DIR / f"qwen3_asr_real_{clip}.json", info)
        log(
            f"{clip}: "
            + ", ".join(
                f"{p}: min rel margin {q['min_margin_rel']:.2e}, {q['n_distinct']} distinct"
                for p, q in info["prompts"].items()
            )
        )
    write_json(out_dir / "qwen3_asr_real_env.json", env)
    log(f"done ({time.time() - t0:.0f} s)")
    return 0


TINY_OUTPUTS = [
    "qwen3_asr_tokenizer",
    "qwen3_asr_tiny_hf",
    "qwen3_asr_tiny_hf_bf16",
    "qwen3_asr_tiny_orig",
    "qwen3_aligner_tiny_hf",
]


def golden_files(golden_dir: Path) -> list[Path]:
    pats = ("qwen3_asr_tiny_*", "qwen3_aligner_tiny_*", "qwen3_asr_env.json")
    return sorted(p for pat in pats for p in golden_dir.glob(pat))


def compare_trees(new_tiny: Path, new_golden: Path) -> list[str]:
    bad = []
    for d in TINY_OUTPUTS:
        a, b = new_tiny / d, TINY_DIR / d
        fa = sorted(p.name for p in a.iterdir())
        fb = sorted(p.name for p in b.iterdir()) if b.exists() else []
        if fa != fb:
            bad.append(f"{d}: files {fa} vs committed {fb}")
        for n in set(fa) & set(fb):
            if (a / n).read_bytes() != (b / n).read_bytes():
                bad.append(f"{d}/{n} differs")
    new = {p.name: p for p in golden_files(new_golden)}
    old = {p.name: p for p in golden_files(GOLDEN_DIR)}
    if sorted(new) != sorted(old):
        bad.append(f"golden files {sorted(new)} vs committed {sorted(old)}")
    for n in set(new) & set(old):
        if n.endswith(".npz"):
            x, y = np.load(new[n]), np.load(old[n])
            if sorted(x.files) != sorted(y.files):
                bad.append(f"{n}: keys differ")
            for k in set(x.files) & set(y.files):
                if (
                    x[k].dtype != y[k].dtype
                    or x[k].shape != y[k].shape
                    or x[k].tobytes() != y[k].tobytes()
                ):
                    bad.append(f"{n}:{k} differs")
        elif new[n].read_bytes() != old[n].read_bytes():
            bad.append(f"{n} differs")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--check", action="store_true", help="rebuild tiny into a temp dir, compare bit for bit"
    )
    ap.add_argument(
        "--tokenizer-only", action="store_true", help="write only tests/tiny/qwen3_asr_tokenizer"
    )
    ap.add_argument(
        "--real",
        metavar="DIR",
        help="real-size (0.6B) random models into DIR, summaries into tests/golden",
    )
    ap.add_argument(
        "--full-search",
        action="store_true",
        help="search the ASR seed from 0 (default: start at the committed env json's asr_seed)",
    )
    ap.add_argument("--real-clips", nargs="+", default=["jfk"], choices=list(CLIPS))
    args = ap.parse_args(argv)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if args.tokenizer_only:
        print(build_tokenizer(TINY_DIR / TOK_NAME))
        return 0
    if args.real:
        return make_real(Path(args.real), args.real_clips)
    start = ASR_SEEDS.start
    env_path = GOLDEN_DIR / "qwen3_asr_env.json"
    if not args.full_search and env_path.exists():
        start = json.loads(env_path.read_text())["asr_seed"]
    if args.check:
        with tempfile.TemporaryDirectory() as td:
            s = make_tiny(Path(td) / "tiny", Path(td) / "golden", seed_start=start)
            bad = compare_trees(Path(td) / "tiny", Path(td) / "golden")
        print(json.dumps(s, ensure_ascii=False, indent=1))
        if bad:
            print("MISMATCH:\n  " + "\n  ".join(bad))
            return 1
        print("check OK: tiny models and goldens reproduced bit for bit")
        return 0
    s = make_tiny(TINY_DIR, GOLDEN_DIR, seed_start=start)
    print(json.dumps(s, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
