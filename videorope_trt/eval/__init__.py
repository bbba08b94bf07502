"""Long-video retrieval evaluation on any backend: V-NIAH, V-NIAH-D and V-RULER-style tasks over haystack videos
built with needles at a grid of depths × lengths, multiple-choice answers scored by exact match, resumable results,
the papers' heatmaps, and the agreement of two deployments on the same trials; and the RoPE variants' figures.

    spec        task files (JSON) → frozen dataclasses
    pictures    drawn needles (colored shapes carrying digits), images and clips read from files
    generators  drawn questions: niah, multi_key, counting, ordering
    haystack    haystack frames from videos, folders or a generated scene
    trials      the grid, the questions as asked, where needles go
    build       a trial's video, cached by content hash
    scoring     answers parsed robustly and scored
    results     the JSON-lines log (resume), the summary, the heatmaps
    runner      the loop over trials and deployments
    rope_figures  rotary angles per frequency pair, logit decay with temporal distance
"""
