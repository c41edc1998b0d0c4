"""The REST baseline: a FastAPI ``def /predict`` JSON endpoint like the earlier projects.

One uvicorn process; the body is ``{"features": [...]}``, validated by pydantic,
answered by a plain (thread-pool) ``def`` handler with one dot product.  uvicorn's
access log is off, which makes it the stronger baseline.  ``/v2/models/{model}/infer``
answers the Open Inference Protocol's JSON the same way, with pydantic models of its
request and response (as MLServer declares them) and one input of shape [rows, features].

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


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, str | int | float | bool] | None = None
    data: list


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, str | int | float | bool] | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, str | int | float | bool] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


def create_app(features: int) -> FastAPI:
    weights, intercept = _weights(features)
    app = FastAPI()

    @app.post("/predict", response_model=PredictOut)
    def predict(body: PredictIn) -> PredictOut:
        if len(body.features) != features:
            raise HTTPException(status_code=422, detail=f"expected {features} features, got {len(body.features)}")
        value = float(np.asarray(body.features) @ weights + intercept)
        return PredictOut(prediction=value, version="v1")

    @app.post("/v2/models/{model}/infer", response_model=InferenceResponse, response_model_exclude_none=True)
    def infer(model: str, body: InferenceRequest) -> InferenceResponse:
        (tensor,) = body.inputs
        X = np.asarray(tensor.data, dtype=np.float64).reshape(tensor.shape)
        if X.ndim != 2 or X.shape[1] != features:
            raise HTTPException(status_code=400, detail=f"expected [rows, {features}], got {tensor.shape}")
        values = (X @ weights + intercept).tolist()
        output = ResponseOutput(name="predictions", shape=[len(values)], datatype="FP64", data=values)
        return InferenceResponse(model_name=model, model_version="v1", id=body.id, outputs=[output])

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--features", type=int, default=10)
    args = parser.parse_args()
    uvicorn.run(create_app(args.features), host="127.0.0.1", port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
