"""The models `qasr-daemon models pull` knows, their bundle names and default precisions.

Free of engine imports: the CLI builds its parser from it, and `qasr-daemon toggle` (a key binding)
builds that parser too. The precision choices spell out ``engine.bundle``'s ENCODER_PRECISIONS and
DECODER_PRECISIONS (tests/test_cli_imports.py checks that they agree).
"""

from __future__ import annotations

from dataclasses import dataclass

from qasr.errors import QasrError

ENCODER_CHOICES = ("fp32", "fp16", "int8")
DECODER_CHOICES = ("f32", "f16", "q8_0", "q4_k")

DEFAULT_ENCODER = "int8"
DEFAULT_DECODER = "q4_k"

# The aligner's decoder ends in a 5000-class timestamp head whose top classes are often within a
# hair of each other: a 4-bit decoder flips such near-ties (a word moves by one or more 80 ms classes),
# q8_0 keeps the argmax of the f32 model almost everywhere for half of f16's size.
ALIGNER_DECODER = "q8_0"


@dataclass(frozen=True)
class CatalogueEntry:
    key: str  # what the user types: "0.6b", "aligner"
    repo: str  # Hugging Face repository id
    download_gb: float  # approximate checkpoint size, for messages
    name: str = ""  # bundle folder stem; default qwen3-asr-<key>
    kind: str = "asr"  # "asr" or "aligner" (checkpoint_kind of the repository's checkpoint)
    encoder: str = DEFAULT_ENCODER  # default precisions of a pull
    decoder: str = DEFAULT_DECODER

    @property
    def stem(self) -> str:
        return self.name or f"qwen3-asr-{self.key}"


CATALOGUE: dict[str, CatalogueEntry] = {
    "0.6b": CatalogueEntry("0.6b", "Qwen/Qwen3-ASR-0.6B", 1.9),
    "1.7b": CatalogueEntry("1.7b", "Qwen/Qwen3-ASR-1.7B", 4.7),
    "aligner": CatalogueEntry("aligner", "Qwen/Qwen3-ForcedAligner-0.6B", 1.8, name="qwen3-forcedaligner-0.6b",
                              kind="aligner", decoder=ALIGNER_DECODER),
}
ALIGNER_KEY = "aligner"


def catalogue_entry(key: str) -> CatalogueEntry:
    entry = CATALOGUE.get(key.lower())
    if entry is None:
        raise QasrError(f"unknown model {key!r}; choose one of {', '.join(CATALOGUE)}")
    return entry


def bundle_name(entry: CatalogueEntry, encoder: str | None = None, decoder: str | None = None) -> str:
    """The folder name: the stem for the entry's default precisions, else stem-<encoder>-<decoder>."""
    encoder, decoder = encoder or entry.encoder, decoder or entry.decoder
    if (encoder, decoder) == (entry.encoder, entry.decoder):
        return entry.stem
    return f"{entry.stem}-{encoder}-{decoder}"
