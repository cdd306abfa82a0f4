"""The synthetic tokenizer of the random checkpoints: a small byte-level BPE in the Qwen2 format, trained
on an embedded multilingual text, with Qwen3-ASR's special tokens after it in the upstream order."""

from __future__ import annotations

import json
from typing import Any

SUPPORT_LANGUAGES = [
    "Chinese", "English", "Cantonese", "Arabic", "German", "French", "Spanish", "Portuguese",
    "Indonesian", "Italian", "Korean", "Russian", "Thai", "Vietnamese", "Japanese", "Turkish",
    "Hindi", "Malay", "Dutch", "Swedish", "Danish", "Finnish", "Polish", "Czech", "Filipino",
    "Persian", "Greek", "Romanian", "Hungarian", "Macedonian",
]

# Added tokens in upstream order: (offset from the first special id, text, special flag).
# Upstream ids are 151643 + offset. Offsets the public record does not name are filled with
# reserved placeholders so that every known token keeps its upstream relative position.
# <asr_text> is NOT special upstream: the official parser finds it in text decoded with
# skip_special_tokens=True.
_KNOWN_ADDED = {
    0: ("<|endoftext|>", True), 1: ("<|im_start|>", True), 2: ("<|im_end|>", True),
    3: ("<|object_ref_start|>", True), 4: ("<|object_ref_end|>", True), 5: ("<|box_start|>", True),
    6: ("<|box_end|>", True), 7: ("<|quad_start|>", True), 8: ("<|quad_end|>", True),
    9: ("<|vision_start|>", True), 10: ("<|vision_end|>", True), 11: ("<|vision_pad|>", True),
    12: ("<|image_pad|>", True), 13: ("<|video_pad|>", True), 14: ("<tool_call>", False),
    15: ("</tool_call>", False), 16: ("<|fim_prefix|>", False), 17: ("<|fim_middle|>", False),
    18: ("<|fim_suffix|>", False), 19: ("<|fim_pad|>", False), 20: ("<|repo_name|>", False),
    21: ("<|file_sep|>", False), 22: ("<tool_response>", False), 23: ("</tool_response>", False),
    24: ("<think>", False), 25: ("</think>", False), 26: ("<|audio_start|>", True),
    27: ("<|audio_end|>", True), 28: ("<tts_pad>", True), 29: ("<tts_text_bos>", True),
    30: ("<tts_text_eod>", True), 31: ("<tts_text_bos_single>", True), 33: ("<|audio_pad|>", True),
    61: ("<asr_text>", False),
}
ADDED_TOKENS: list[tuple[str, bool]] = [
    _KNOWN_ADDED.get(i, (f"<|reserved_special_{i}|>", True)) for i in range(62)
]
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")

# Qwen2's pre-tokenizer rule (transformers' Qwen2 tokenizer, llama.cpp "qwen2").
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'audio' %}{{- '<|audio_start|><|audio_pad|><|audio_end|>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# What the BPE merges are learned from: the prompt scaffold, the language names, context
# prompts and short texts in several scripts, so these tokenize into multi-byte tokens.
_CORPUS_LINES = [
    "system user assistant language None language English language Chinese language German",
    " ".join(f"language {name}" for name in SUPPORT_LANGUAGES),
    " ".join(SUPPORT_LANGUAGES),
    "The meeting is about the quarterly budget, the new product launch and the hiring plan.",
    "Please transcribe the following speech. Names: Alice Johnson, Bob Smith, Qwen, Kubernetes.",
    "Hello everyone, thank you for joining today. Let's start with a short update from the team.",
    "I think we should move the deadline to next Friday because the tests are still failing.",
    "The weather today is sunny with a light breeze, and tomorrow it will rain in the afternoon.",
    "Could you send me the report by email? I will read it tonight and reply in the morning.",
    "numbers 0 1 2 3 4 5 6 7 8 9 10 100 2024 3.14 50% $20, (yes) [no] \"quoted\" it's we're I'll",
    "Bonjour à tous, merci d'être venus. Le café est très bon et la réunion commence à midi.",
    "Élève, garçon, déjà, où, très, fenêtre, château, naïve, Noël, français, l'été dernier.",
    "Guten Tag! Die Straße ist schön, und die Brücke über den Fluss ist größer als früher. Grüße.",
    "¿Dónde está la estación? El niño comió una manzana y la señora leyó el periódico mañana.",
    "Olá, tudo bem? A informação está no coração da aplicação; não há razão para pressa.",
    "Buongiorno, la città è bellissima e il caffè è già pronto. Perché no? Più tardi, grazie.",
    "Dziękuję bardzo, cześć! Děkuji, dobrý den. Köszönöm szépen. Tack så mycket, hej då.",
    "Привет, как дела? Спасибо, хорошо. Γειά σου, ευχαριστώ πολύ. Здравствуйте, до свидания.",
    "今天天气很好，我们一起去公园散步吧。会议将在下午三点开始，请大家准时参加。",
    "我们的产品发布计划已经完成，谢谢大家的支持。语音识别模型可以识别中文和英文。",
    "你好，世界。中文，英文，德语，法语，西班牙语，日语，韩语，粤语。",
    "こんにちは、ありがとうございます。今日はいい天気ですね。안녕하세요, 감사합니다.",
    "Xin chào, cảm ơn bạn. Merhaba, teşekkürler. Selamat pagi, terima kasih. สวัสดีครับ",
    "مرحبا، شكرا جزيلا. नमस्ते, धन्यवाद। سلام، متشکرم. Здраво, благодарам.",
]


def _corpus() -> str:
    # Repetition weights the scaffold and the language names so they merge early.
    scaffold = (_CORPUS_LINES[:3]) * 6
    return "\n".join(scaffold + _CORPUS_LINES * 3)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def train_tokenizer(target_vocab: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train the synthetic Qwen2-style byte-level BPE: (vocab token -> id, merges in order)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=target_vocab, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
    )
    tok.train_from_iterator([_corpus()], trainer=trainer)
    state = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    # Renumber: the 256 byte symbols in GPT-2 byte order first, then merge results in merge order
    # (the Qwen2 layout), so ids do not depend on the trainer's internal numbering.
    byte_map = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for b in range(256):
        vocab.setdefault(byte_map[b], len(vocab))
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return vocab, merges  # type: ignore[return-value]


# The forced aligner's tokenizer has one more added token right after <asr_text> (upstream 151705).
ALIGNER_ADDED_TOKENS: list[tuple[str, bool]] = ADDED_TOKENS + [("<timestamp>", False)]


def special_ids(n_regular: int, added: list[tuple[str, bool]] = ADDED_TOKENS) -> dict[str, int]:
    """Token text -> id for every added token, placed after the regular vocabulary."""
    return {text: n_regular + i for i, (text, _) in enumerate(added)}


def _tokenizer_config(ids: dict[str, int], added: list[tuple[str, bool]] = ADDED_TOKENS) -> dict[str, Any]:
    decoder = {
        str(ids[text]): {"content": text, "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": special}
        for text, special in added
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_end|>",
                                      "<|audio_pad|>"],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "extra_special_tokens": {
            "audio_bos_token": "<|audio_start|>",
            "audio_eos_token": "<|audio_end|>",
            "audio_token": "<|audio_pad|>",
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        },
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "processor_class": "Qwen3ASRProcessor",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


# --------------------------------------------------------------------------- config
