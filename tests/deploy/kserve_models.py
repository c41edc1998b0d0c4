"""Check KServe resources against the KServe SDK's models: ``python kserve_models.py < resources.json``.

Run by the interpreter that has the ``kserve`` package (.venv-oip; see test_kserve.py),
not by regserve's.  The SDK's models, generated from KServe's OpenAPI schema, name
every field of InferenceService and ServingRuntime and the Kubernetes types inside
them (the ``kubernetes`` client's models).  Each resource is walked field by field:
a key no model declares, a value of the wrong JSON type, or a required field left
out is an error.  Prints the errors as a JSON list; exits 1 when there are any.
"""

from __future__ import annotations

import json
import re
import sys

import kserve
from kubernetes import client as k8s

ROOTS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
}
_SCALARS = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "datetime": (str,),
    "date": (str,),
    "ResourceQuantity": (str, int, float),
}
# The kserve models write ``list[T]`` and ``dict(str, T)``; the kubernetes client's ``List[T]`` and ``Dict[str, T]``.
_LIST = re.compile(r"(?:list|List)\[(.*)\]")
_DICT = re.compile(r"(?:dict\(|Dict\[)([^,]*), (.*)[)\]]")


def _model(name: str):
    return getattr(kserve, name, None) or getattr(kserve.models, name, None) or getattr(k8s, name, None)


def check(value, type_name: str, path: str, errors: list[str]) -> None:
    if match := _LIST.fullmatch(type_name):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            check(item, match.group(1), f"{path}[{i}]", errors)
        return
    if match := _DICT.fullmatch(type_name):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return
        for key, item in value.items():
            check(item, match.group(2), f"{path}.{key}", errors)
        return
    if type_name in _SCALARS:
        allowed = _SCALARS[type_name]
        if not isinstance(value, allowed) or (
            isinstance(value, bool) and bool not in allowed and object not in allowed
        ):
            errors.append(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return
    model = _model(type_name)
    if model is None:
        errors.append(f"{path}: the SDK has no model {type_name}")
        return
    if not isinstance(value, dict):
        errors.append(f"{path}: expected an object ({type_name}), got {type(value).__name__}")
        return
    attributes = {json_name: attribute for attribute, json_name in model.attribute_map.items()}
    present = {}
    for key, item in value.items():
        attribute = attributes.get(key)
        if attribute is None:
            errors.append(f"{path}.{key}: {type_name} has no field {key!r}")
            continue
        present[attribute] = item
        check(item, model.openapi_types[attribute], f"{path}.{key}", errors)
    try:
        model(**present)  # the generated setters refuse a required field left out and values outside an enum
    except (ValueError, TypeError) as exc:
        errors.append(f"{path}: {type_name}: {exc}")


def main() -> int:
    errors: list[str] = []
    for index, resource in enumerate(json.load(sys.stdin)):
        key = (resource.get("apiVersion"), resource.get("kind"))
        root = ROOTS.get(key)
        if root is None:
            errors.append(f"[{index}]: {key} is not a KServe resource this check knows")
            continue
        check(resource, root, f"[{index}] {key[1]}", errors)
    print(json.dumps(errors))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
