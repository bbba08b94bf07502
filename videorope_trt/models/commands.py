"""`videorope-trt make-tiny OUT`: write the deterministic tiny Qwen2-VL checkpoint."""

from __future__ import annotations

import json
import time


def add_arguments(parser, name):
    parser.add_argument("out", help="output folder (new or empty, unless --force)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--variant", default="videorope",
                        help="RoPE variant recorded in config.json (default videorope)")
    parser.add_argument("--delta", type=float, default=None, help="ATS temporal spacing for variants that have it")
    parser.add_argument("--rope-params", default=None, metavar="JSON",
                        help='further RoPE parameters as a JSON object, e.g. \'{"scaling": "yarn", "factor": 4}\'')
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")


def rope_choice(args) -> dict:
    """The "videorope_trt" config field from the command line, checked against `videorope_trt.rope`."""
    from videorope_trt import rope

    params = {}
    if args.rope_params:
        try:
            params = json.loads(args.rope_params)
        except json.JSONDecodeError as e:
            raise ValueError(f"--rope-params must be a JSON object, got {args.rope_params!r} ({e})") from None
        if not isinstance(params, dict):
            raise ValueError(f"--rope-params must be a JSON object, got {args.rope_params!r}")
    variant = rope.get_variant(args.variant)
    if args.delta is not None:
        params["delta"] = args.delta
    elif variant.default_delta is not None:
        params.setdefault("delta", variant.default_delta)
    return {"variant": variant.name, **params}


def run(args, name) -> int:
    from videorope_trt.models.tiny import make_tiny

    start = time.perf_counter()
    choice = rope_choice(args)
    out = make_tiny(args.out, seed=args.seed, rope=choice, overwrite=args.force)
    print(f"make-tiny: wrote {out} (seed {args.seed}, {json.dumps(choice)}) in {time.perf_counter() - start:.1f} s")
    return 0
