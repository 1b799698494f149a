"""Save augury's benchmark model in the formats the peer servers load; run with the peers' ``base`` venv.

``http_bench.py`` runs this once per workload (``/tmp/bench/venvs/base/bin/python make_peer_models.py
<work>``) when a peer system is selected. From ``<work>/hgb20.joblib`` and ``<work>/body_v1.json`` (the
harness model and its one-row v1 body) it writes into ``<work>/peers/``:

- ``model_s.joblib``: the same estimator, dumped again by the base venv's joblib (the file the naive
  Starlette peer, MLServer's sklearn runtime and BentoML load; those venvs pin the same scikit-learn);
- ``model_s.onnx``: its skl2onnx export (float32 input ``input``, output ``probabilities``, no zipmap,
  opset 17), the export the peers were first measured with; no fallback model;
- ``body_features.json``: ``{"features": [[20 floats]]}``, the row of ``body_v1.json`` in f0..f19 order
  (the body of the peers' Starlette and BentoML endpoints);
- ``peers_meta.json``: versions, the row's ``predict_proba`` (float64) and onnxruntime probabilities, and
  the largest ONNX-vs-sklearn difference over the row.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np


def main() -> None:
    work = Path(sys.argv[1])
    out = work / "peers"
    out.mkdir(parents=True, exist_ok=True)
    model = joblib.load(work / "hgb20.joblib")
    joblib.dump(model, out / "model_s.joblib")

    instance = json.loads((work / "body_v1.json").read_bytes())["instances"][0]
    n = model.n_features_in_
    row = [float(instance[f"f{j}"]) for j in range(n)]
    (out / "body_features.json").write_text(json.dumps({"features": [row]}))

    import onnx
    import onnxruntime as ort
    import skl2onnx
    import sklearn
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(model, initial_types=[("input", FloatTensorType([None, n]))],
                  options={id(model): {"zipmap": False}}, target_opset=17)
    (out / "model_s.onnx").write_bytes(onx.SerializeToString())
    sess = ort.InferenceSession(str(out / "model_s.onnx"), providers=["CPUExecutionProvider"])
    x = np.asarray([row])
    proba = model.predict_proba(x)[0]
    onnx_proba = sess.run(["probabilities"], {"input": x.astype(np.float32)})[0][0]
    meta = {
        "versions": {"python": sys.version.split()[0], "scikit-learn": sklearn.__version__,
                     "numpy": np.__version__, "joblib": joblib.__version__, "skl2onnx": skl2onnx.__version__,
                     "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        "expected_proba": [float(v) for v in proba],
        "onnx_proba": [float(v) for v in onnx_proba],
        "onnx_max_abs_diff": float(np.max(np.abs(onnx_proba - proba))),
    }
    (out / "peers_meta.json").write_text(json.dumps(meta, indent=2))
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
