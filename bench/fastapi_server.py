"""The REST baseline: a FastAPI ``def /predict`` JSON endpoint like the earlier projects.

One uvicorn process; the body is ``{"features": [...]}``, validated by pydantic,
answered by a plain (thread-pool) ``def`` handler with one dot product.  uvicorn's
access log is off, which makes it the stronger baseline.

    python -m bench.fastapi_server --port 8000 --features 10
"""

from __future__ import annotations

import argparse

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from bench.bare_server import _weights


class PredictIn(BaseModel):
    features: list[float]


class PredictOut(BaseModel):
    prediction: float
    version: str


def create_app(features: int) -> FastAPI:
    weights, intercept = _weights(features)
    app = FastAPI()

    @app.post("/predict", response_model=PredictOut)
    def predict(body: PredictIn) -> PredictOut:
        if len(body.features) != features:
            raise HTTPException(status_code=422, detail=f"expected {features} features, got {len(body.features)}")
        value = float(np.asarray(body.features) @ weights + intercept)
        return PredictOut(prediction=value, version="v1")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--features", type=int, default=10)
    args = parser.parse_args()
    uvicorn.run(create_app(args.features), host="127.0.0.1", port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
