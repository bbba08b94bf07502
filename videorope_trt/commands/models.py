"""`videorope-trt make-tiny OUT`: write the deterministic tiny Qwen2-VL checkpoint.

Also the RoPE command-line flags every command that loads a model shares (`add_rope_arguments`,
`rope_from_args` → `load_model(..., variant=, rope_params=)`).
"""

from __future__ import annotations

import json
import time


def add_rope_arguments(parser, default_variant=None):
    """--variant, --delta, --rope-params; with no --variant the checkpoint's config field decides."""
    parser.add_argument("--variant", default=default_variant,
                        help=f"RoPE variant (default: {default_variant or 'the checkpoint config field, else m_rope'})")
    parser.add_argument("--delta", type=float, default=None, help="ATS temporal spacing for variants that have it")
    parser.add_argument("--rope-params", default=None, metavar="JSON",
                        help='further RoPE parameters as a JSON object, e.g. \'{"scaling": "yarn", "factor": 4}\'')


def rope_from_args(args) -> tuple:
    """(variant or None, params or None) for `load_model`; the variant name is checked against the registry."""
    from videorope_trt import rope

    params = {}
    if args.rope_params:
        try:
            params = json.loads(args.rope_params)
        except json.JSONDecodeError as e:
            raise ValueError(f"--rope-params must be a JSON object, got {args.rope_params!r} ({e})") from None
        if not isinstance(params, dict):
            raise ValueError(f"--rope-params must be a JSON object, got {args.rope_params!r}")
    if args.delta is not None:
        params["delta"] = args.delta
    variant = None if args.variant is None else rope.get_variant(args.variant).name
    return variant, (params or None)


def add_arguments(parser, name):
    parser.add_argument("out", help="output folder (new or empty, unless --force)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    add_rope_arguments(parser, default_variant="videorope")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")


def run(args, name) -> int:
    from videorope_trt import rope
    from videorope_trt.models.tiny import make_tiny

    start = time.perf_counter()
    variant, params = rope_from_args(args)
    params = dict(params or {})
    default_delta = rope.get_variant(variant).default_delta
    if default_delta is not None:
        params.setdefault("delta", default_delta)  # record the value in force, not an implicit default
    choice = {"variant": variant, **params}
    out = make_tiny(args.out, seed=args.seed, rope=choice, overwrite=args.force)
    print(f"make-tiny: wrote {out} (seed {args.seed}, {json.dumps(choice)}) in {time.perf_counter() - start:.1f} s")
    return 0
