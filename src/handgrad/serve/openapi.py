"""The OpenAPI 3.1 document of the server (served at ``/openapi.json``)."""

from __future__ import annotations

_ERROR = {"description": "A JSON error naming the problem",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(ref, description="OK"):
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _errors(*codes):
    return {str(c): _ERROR for c in codes}


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "The model's name (the file's stem unless another was given)"}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "The model's version: always \"1\""}

_TENSOR_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": -1}}

SCHEMAS = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}}},
    "ServerMetadata": {"type": "object", "required": ["name", "version", "extensions"],
                       "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                      "extensions": {"type": "array",
                                                     "items": {"type": "string"}}}},
    "Live": {"type": "object", "properties": {"live": {"type": "boolean"}}},
    "Ready": {"type": "object", "properties": {"ready": {"type": "boolean"},
                                               "name": {"type": "string"}}},
    "TensorMetadata": {"type": "object", "required": ["name", "datatype", "shape"],
                       "properties": {"name": {"type": "string"},
                                      "datatype": {"type": "string"},
                                      "shape": _TENSOR_SHAPE}},
    "ModelMetadata": {
        "type": "object", "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"}, "platform": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
            "outputs": {"type": "array",
                        "items": {"$ref": "#/components/schemas/TensorMetadata"}},
            "parameters": {"type": "object"}}},
    "ModelConfig": {"type": "object", "description": "Triton's model configuration"},
    "RequestInput": {
        "type": "object", "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string", "description": "always \"input\""},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0},
                      "description": "[N, *example shape] or [N, number of inputs]"},
            "datatype": {"type": "string",
                         "enum": ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                                  "INT32", "INT64", "FP16", "FP32", "FP64"]},
            "parameters": {"type": "object", "properties": {
                "binary_data_size": {"type": "integer", "minimum": 0}}},
            "data": {"type": "array", "description": "row-major values, flat or nested"}}},
    "RequestOutput": {"type": "object", "required": ["name"],
                      "properties": {"name": {"type": "string",
                                              "enum": ["probabilities", "label"]},
                                     "parameters": {"type": "object", "properties": {
                                         "binary_data": {"type": "boolean"}}}}},
    "InferenceRequest": {
        "type": "object", "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {
                "binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "minItems": 1,
                       "items": {"$ref": "#/components/schemas/RequestInput"}},
            "outputs": {"type": "array",
                        "items": {"$ref": "#/components/schemas/RequestOutput"}}}},
    "ResponseOutput": {
        "type": "object", "required": ["name", "shape", "datatype"],
        "properties": {"name": {"type": "string"}, "shape": _TENSOR_SHAPE,
                       "datatype": {"type": "string"},
                       "parameters": {"type": "object", "properties": {
                           "binary_data_size": {"type": "integer"}}},
                       "data": {"type": "array"}}},
    "InferenceResponse": {
        "type": "object", "required": ["model_name", "outputs"],
        "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                       "id": {"type": "string"},
                       "outputs": {"type": "array",
                                   "items": {"$ref": "#/components/schemas/ResponseOutput"}}}},
    "Drawing": {
        "type": "object", "required": ["pixels", "width", "height"],
        "properties": {"pixels": {"type": "string", "contentEncoding": "base64",
                                  "description": "one byte of gray per pixel, row by row"},
                       "width": {"type": "integer", "minimum": 8, "maximum": 1024},
                       "height": {"type": "integer", "minimum": 8, "maximum": 1024},
                       "label": {"type": "integer", "minimum": 0},
                       "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 10}}},
    "Look": {"type": "object", "description": "probabilities, hidden activations, the most "
                                              "active units' first-layer weights"},
    "Trace": {"type": "object", "description": "the derivation's steps for the drawing"},
}


def _infer_op(versioned):
    return {
        "summary": "Classify examples (JSON tensors or the binary tensor data extension)",
        "operationId": "infer_version" if versioned else "infer",
        "parameters": [_NAME, _VERSION] if versioned else [_NAME],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
            "application/octet-stream": {"schema": {
                "type": "string", "format": "binary",
                "description": "a JSON InferenceRequest of Inference-Header-Content-Length "
                               "bytes, then each binary input's bytes"}}}},
        "responses": {"200": {"description": "The outputs", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferenceResponse"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            **_errors(400, 404, 413, 415, 422, 503, 504)},
    }


def _model_paths():
    paths = {}
    for versioned in (False, True):
        base = "/v2/models/{name}" + ("/versions/{version}" if versioned else "")
        params = [_NAME, _VERSION] if versioned else [_NAME]
        v = "_version" if versioned else ""
        paths[base] = {"get": {"summary": "Model metadata: inputs, outputs, datatypes, shapes",
                               "operationId": f"model_metadata{v}", "parameters": params,
                               "responses": {"200": _json("ModelMetadata"), **_errors(404)}}}
        paths[base + "/ready"] = {"get": {
            "summary": "Whether the model takes requests", "operationId": f"model_ready{v}",
            "parameters": params,
            "responses": {"200": _json("Ready"), **_errors(404),
                          "503": _json("Ready", "Not ready")}}}
        paths[base + "/config"] = {"get": {
            "summary": "Triton's model configuration", "operationId": f"model_config{v}",
            "parameters": params, "responses": {"200": _json("ModelConfig"), **_errors(404)}}}
        paths[base + "/infer"] = {"post": _infer_op(versioned)}
    return paths


def _page_op(summary, op_id, ref, with_body=True):
    op = {"summary": summary, "operationId": op_id, "parameters": [_NAME],
          "responses": {"200": _json(ref), **_errors(400, 404, 413, 422, 503, 504)}}
    if with_body:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Drawing"}}}}
    return {"post": op}


def openapi_document(version):
    return {
        "openapi": "3.1.0",
        "info": {"title": "handgrad serve", "version": version,
                 "description": "The Open Inference Protocol (KServe v2 / Triton HTTP/REST) "
                                "for handgrad models, operations endpoints, and the page's "
                                "API. Every error is {\"error\": message}."},
        "paths": {
            "/": {"get": {"summary": "The page: draw a digit and watch the network",
                          "operationId": "page",
                          "responses": {"200": {"description": "HTML",
                                                "content": {"text/html": {}}}}}},
            "/v2": {"get": {"summary": "Server metadata", "operationId": "server_metadata",
                            "responses": {"200": _json("ServerMetadata")}}},
            "/v2/health/live": {"get": {"summary": "Liveness", "operationId": "live",
                                        "responses": {"200": _json("Live")}}},
            "/v2/health/ready": {"get": {"summary": "Readiness", "operationId": "ready",
                                         "responses": {"200": _json("Ready"),
                                                       "503": _json("Ready", "Not ready")}}},
            "/v2/repository/index": {"post": {
                "summary": "The models served, with their state (Triton's repository index)",
                "operationId": "repository_index",
                "responses": {"200": {"description": "OK", "content": {"application/json": {
                    "schema": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "version": {"type": "string"},
                        "state": {"type": "string"}}}}}}}}}},
            **_model_paths(),
            "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics",
                                 "responses": {"200": {"description": "Prometheus text format",
                                                       "content": {"text/plain": {}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                      "responses": {"200": {"description": "OpenAPI 3.1",
                                                            "content": {
                                                                "application/json": {}}}}}},
            "/api/models": {"get": {"summary": "The models the page can show",
                                    "operationId": "page_models",
                                    "responses": {"200": {"description": "OK", "content": {
                                        "application/json": {}}}}}},
            "/api/models/{name}/look": _page_op("The network's view of a drawing",
                                                "page_look", "Look"),
            "/api/models/{name}/learn": _page_op(
                "One SGD step on the visitor's copy of the model (the served one never "
                "changes)", "page_learn", "Look"),
            "/api/models/{name}/trace": _page_op("The derivation's numbers for a drawing "
                                                 "and its true label", "page_trace", "Trace"),
            "/api/models/{name}/reset": _page_op("Forget the visitor's copy",
                                                 "page_reset", "Ready", with_body=False),
            "/static/{path}": {"get": {
                "summary": "The page's scripts and styles (shipped in the package)",
                "operationId": "static",
                "parameters": [{"name": "path", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "A file"}, **_errors(404)}}},
        },
        "components": {"schemas": SCHEMAS},
    }
