"""`videorope-trt <command>`: Video-LLMs with 3D rotary position embeddings, from Qwen2-VL checkpoints to TensorRT.

The entry point only: the command table and its dispatcher are in `videorope_trt.commands`.
"""

from __future__ import annotations

import sys

from videorope_trt.commands import COMMANDS, main

__all__ = ["COMMANDS", "main"]

if __name__ == "__main__":
    sys.exit(main())
