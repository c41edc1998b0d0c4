"""The Open Inference Protocol (KServe v2) over regserve's models: tensors, metadata and the gRPC service.

``tensors`` and ``serving`` know no transport, so the gRPC servicer and the REST routes
read requests and build answers with the same functions, over the same prediction path
as regserve.v1 Predict.
"""
