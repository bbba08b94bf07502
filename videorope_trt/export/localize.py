"""Name the first node where an exported graph departs from a reference graph (Polygraphy's layerwise approach).

    graph under test ─ every intermediate tensor marked as an output ─┐  ONNX Runtime, same feeds
    reference graph  ─ every intermediate tensor marked as an output ─┘  → compare tensors of the same name,
                                                                         in the test graph's topological order

The reference is a fresh fp32 export of the same model in the same rotary form, so both graphs name their
tensors alike (torch.onnx names them after the model's modules and ops); tensors that exist in one graph only
(fp16 Casts, a form's rewrite) are skipped. The first node with an output past the tolerance is the divergence:
the error starts there, and everything downstream merely carries it.

Both graphs are loaded whole (weights included) to add outputs, so this is for models under 2 GB (the tiny
checkpoint, debugging runs); larger graphs are checked output by output only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from videorope_trt.export.parity_compare import error_metrics


def _all_outputs_session(path: Path):
    """An ONNX Runtime session over `path` with every node output as a graph output; (session, node list)."""
    import onnx
    import onnxruntime as ort

    from videorope_trt.plugins.ort_op import session_options

    model = onnx.load(str(path))  # with its external data: the modified copy is passed as bytes
    marked = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in marked:
                model.graph.output.append(onnx.ValueInfoProto(name=name))  # untyped: ONNX Runtime infers it
                marked.add(name)
    options = session_options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor as written
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess, list(model.graph.node)


def _run_all(path: Path, feeds: dict):
    sess, nodes = _all_outputs_session(path)
    wanted = {i.name for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(None, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, values)), nodes


def _diverges(got: np.ndarray, ref: np.ndarray, tol) -> dict | None:
    """Metrics when `got` fails the parity table's rule (max relative error, cosine), else None."""
    if got.shape != ref.shape or not np.issubdtype(ref.dtype, np.floating):
        return None
    g, r = got.astype(np.float64), ref.astype(np.float64)
    finite = np.isfinite(g) & np.isfinite(r)
    if not finite.all():  # fp16 clamps the mask's -3.4e38 to -65504: compare where both are finite
        if not np.array_equal(np.isfinite(g), np.isfinite(r)):
            return {"max_abs": float("inf"), "max_rel": float("inf"), "cosine": 0.0}
        g, r = g[finite], r[finite]
    m = error_metrics(g, r)
    return None if m["max_rel"] <= tol.max_rel and m["cosine"] >= tol.min_cosine else m  # the table's pass rule


def first_divergence(test_path, ref_path, feeds: dict, tol) -> dict | None:
    """{"node", "op_type", "tensor", "compared", metrics...} for the first node of `test_path` whose output departs
    from the same-named tensor of `ref_path` under `tol` (parity.Tolerance), or None when none does."""
    got, nodes = _run_all(Path(test_path), feeds)
    ref, _ = _run_all(Path(ref_path), feeds)
    compared = 0
    for node in nodes:
        for name in node.output:
            if name not in ref or name not in got:
                continue
            compared += 1
            bad = _diverges(np.asarray(got[name]), np.asarray(ref[name]), tol)
            if bad is not None:
                return {"node": node.name, "op_type": node.op_type, "tensor": name, "compared": compared, **bad}
    return None
