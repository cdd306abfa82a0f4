"""The official Qwen3-ForcedAligner (qwen-asr, transformers backend, CPU, float32) as a test reference.

`align()` is the official `Qwen3ForcedAligner.align()` itself. Two deliberate differences, the same as
tests/official.py documents for the speech recognizer: the Qwen2 pre-tokenizer rule is restored after
loading, and the audio encoder gets the window mask the official CPU path omits (clips over 8 s).
`class_indices()` repeats the first half of align() to expose the raw argmax classes before the repair.

Never imported by qasr's runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qasr.daemon.bench.random_checkpoint import import_official_qwen_asr
from tests.official import patch_window_mask, restore_qwen2_pretokenizer


class OfficialAligner:
    def __init__(self, hf_dir: str | Path) -> None:
        import torch

        import_official_qwen_asr()
        from qwen_asr.inference.qwen3_forced_aligner import Qwen3ForcedAligner

        self.aligner = Qwen3ForcedAligner.from_pretrained(str(hf_dir), dtype=torch.float32)
        self.model = self.aligner.model.eval()
        self.processor = self.aligner.processor
        restore_qwen2_pretokenizer(self.processor.tokenizer)
        patch_window_mask(self.model.thinker.audio_tower, lambda: True)

    def words(self, text: str, language: str) -> list[str]:
        return self.aligner.aligner_processor.encode_timestamp(text, language)[0]

    def input_ids(self, audio: np.ndarray, text: str, language: str) -> list[int]:
        return self._inputs(audio, text, language)["input_ids"][0].tolist()

    def _inputs(self, audio: np.ndarray, text: str, language: str):
        import torch

        _, input_text = self.aligner.aligner_processor.encode_timestamp(text, language)
        inputs = self.processor(text=[input_text], audio=[np.asarray(audio, dtype=np.float32)],
                                return_tensors="pt", padding=True)
        return inputs.to(torch.device("cpu")).to(torch.float32)

    def class_indices(self, audio: np.ndarray, text: str, language: str) -> np.ndarray:
        import torch

        inputs = self._inputs(audio, text, language)
        with torch.no_grad():
            logits = self.model.thinker(**inputs).logits
        ids = inputs["input_ids"][0]
        return logits[0].argmax(-1)[ids == self.aligner.timestamp_token_id].numpy()

    def align(self, audio: np.ndarray, text: str, language: str) -> list[tuple[str, float, float]]:
        result = self.aligner.align(audio=(np.asarray(audio, dtype=np.float32), 16000), text=text, language=language)[0]
        return [(item.text, item.start_time, item.end_time) for item in result]
