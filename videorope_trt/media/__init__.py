"""Media in: video decode and frame sampling, Qwen2-VL preprocessing, synthetic videos, and the prompt layout
(chat template with the video's placeholder tokens)."""
