"""`videorope-trt positions`: print the position rows of a layout for a RoPE variant, and a short summary.
`videorope-trt plot-rope`: each variant's rotary angles along t, h and w, and its attention-logit decay with temporal
distance (angles.png, decay.png and the plotted arrays in rope.json)."""

from __future__ import annotations

import numpy as np


def _add_positions(parser) -> None:
    from videorope_trt.rope.variants import VARIANTS

    parser.add_argument("--variant", default="videorope", help=f"one of: {', '.join(sorted(VARIANTS))}")
    parser.add_argument("--layout", required=True,
                        help='segments, e.g. "text:3,video:2x2x3,image:2x3,text:2" (h, w after the 2x2 merge)')
    parser.add_argument("--start", type=float, default=0.0, help="first position (default 0)")
    parser.add_argument("--delta", type=float, default=None, help="ATS temporal spacing (variants with ATS)")
    parser.add_argument("--fps", type=float, default=None, help="sampling rate of the videos (qwen25_mrope)")
    parser.add_argument("--tokens-per-second", type=float, default=None, help="qwen25_mrope time resolution")
    parser.add_argument("--order", default="code", choices=("code", "paper"), help="VRoPE direction order")
    parser.add_argument("--head-dim", type=int, default=None, help="also print the frequency → row map")


def _add_plot(parser) -> None:
    from videorope_trt.rope.variants import VARIANTS

    parser.add_argument("--variants", default="m_rope,videorope,vrope",
                        help=f"comma-separated, any of: {', '.join(sorted(VARIANTS))} (default m_rope,videorope,vrope)")
    parser.add_argument("--layout", default="text:2,video:64x8x8,text:2",
                        help="segments with one video block and text after it (the query), h and w after the 2x2 "
                             "merge (default text:2,video:64x8x8,text:2)")
    parser.add_argument("--period", type=int, default=8, help="frames between two copies of the repeated frame "
                        "(default 8)")
    parser.add_argument("--head-dim", type=int, default=128, help="attention head size (default 128, Qwen2-VL 7B)")
    parser.add_argument("--theta", type=float, default=1e6, help="rotary base (default 1e6, Qwen2-VL)")
    parser.add_argument("--out", default="rope-plots", help="output folder (default rope-plots)")


def _fmt(row) -> str:
    return " ".join(f"{v:g}" for v in row)


def _positions(args) -> int:
    from videorope_trt.rope.frequencies import axis_map
    from videorope_trt.rope.positions import layout_positions
    from videorope_trt.rope.segments import parse_layout
    from videorope_trt.rope.variants import get_variant

    v = get_variant(args.variant)
    segs = parse_layout(args.layout)
    rows, next_pos = layout_positions(v, segs, start=args.start, delta=args.delta, fps=args.fps,
                                      tokens_per_second=args.tokens_per_second, order=args.order)
    labels = ["t", "h", "w"] if v.num_axes == 3 else [f"v{k}" for k in range(v.num_axes)]
    width = max(len(s) for s in labels)
    print(f"variant {v.name}: {v.doc}")
    for label, row in zip(labels, rows.astype(np.float32)):
        print(f"{label:>{width}}: {_fmt(row)}")
    length = rows.shape[1]
    print(f"tokens {length}, rows {v.num_axes}, position range [{rows.min():g}, {rows.max():g}], "
          f"next text at {next_pos:g}, decode step {v.decode_step}, rope_delta {next_pos - v.decode_step * length:g}")
    if args.head_dim:
        print(f"axis map (head_dim {args.head_dim}): {_fmt(axis_map(v, args.head_dim))}")
    return 0


def _plot(args) -> int:
    from videorope_trt.eval.rope_figures import write_rope_plots

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    result = write_rope_plots(variants, args.layout, args.out, args.period, args.head_dim, args.theta)
    for d in result["decays"]:
        t_row = d["temporal"]
        temporal = "" if t_row is None else f", t-row pairs {t_row.min():.3f}..{t_row.max():.3f}"
        print(f"{d['variant']}: logit over {len(d['distance'])} frames {d['logit'].min():.3f}..{d['logit'].max():.3f}"
              f"{temporal}")
    print("wrote " + ", ".join(str(p) for p in result["paths"].values()))
    return 0


#: command name → (its arguments, its action)
_COMMANDS = {"positions": (_add_positions, _positions), "plot-rope": (_add_plot, _plot)}


def add_arguments(parser, name) -> None:
    _COMMANDS[name][0](parser)


def run(args, name) -> int:
    return _COMMANDS[name][1](args)
