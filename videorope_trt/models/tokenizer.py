"""A small real tokenizer for the tiny checkpoint: byte-level BPE trained by `tokenizers` on a built-in English
corpus, with Qwen2-VL's special tokens appended after the learned vocabulary (as in Qwen2-VL, where they follow
the BPE ids) and a chat template that expands image and video parts the way Qwen2-VL's processor expects.
"""

from __future__ import annotations

#: Qwen2-VL's special tokens, in Qwen2-VL's id order.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Written for this project: short plain sentences about videos, shapes, colours, time and counting, so the
# demo's prompts and answers tokenize into sensible pieces.
_CORPUS = """
The video shows a red circle moving from the left side of the frame to the right side.
A blue square bounces near the top edge while a green triangle slowly turns in the centre.
Each frame has a counter in the corner, and the counter goes up by one with every new frame.
What colour is the shape that moves fastest? The red circle moves fastest across the screen.
How many shapes are visible at the start of the clip? Three shapes are visible at the start.
When does the yellow star appear? The yellow star appears after about ten seconds.
Describe what happens in the video. A few simple shapes drift, bounce and change places on a dark background.
The camera does not move. The light stays the same. Nothing else enters the scene.
Count the frames: one, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve.
Numbers such as 0 1 2 3 4 5 6 7 8 9 10 20 30 40 50 60 100 and 1000 are written with digits.
The answer is short. The answer is yes. The answer is no. I am not sure. Please look again.
A long video can last for minutes or hours, and a model must remember what it saw at the beginning.
Position embeddings tell the model where each token sits in time, in height and in width.
Time flows forward; the first frame comes before the second frame, and the last frame comes at the end.
The user asks a question about the picture and the assistant gives a clear and helpful answer.
You are a helpful assistant. Answer the question about the video in one sentence.
"""

_CHAT_TEMPLATE = (
    # Literal text goes through {{ '...' }} so the whitespace-trimming tags never eat its newlines.
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def train_tokenizer(vocab_size: int = 640):
    """Byte-level BPE with Qwen2's pre-tokenizer, normalizer and decoder; returns a `tokenizers.Tokenizer`."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for line in _CORPUS.strip().splitlines() if line]
    tok.train_from_iterator(lines, trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def tokenizer_config() -> dict:
    """tokenizer_config.json: the special-token roles and the chat template."""
    return {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": 32768,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "errors": "replace",
        "chat_template": _CHAT_TEMPLATE,
    }
