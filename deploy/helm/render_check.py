#!/usr/bin/env python3
"""Renders the aggregator chart with Helm's own engine and validates every manifest against the
Kubernetes OpenAPI schemas: `helm template` + a strict schema check, without a helm binary.

    build/helm-tools/bin/python deploy/helm/render_check.py deploy/helm/healthfed-aggregator \\
        --set-file federation.aggregatorYaml=federation/aggregator/aggregator.yaml ... \\
        [--set-json 'service={"type":"LoadBalancer"}'] [--kube-version 1.30] [--out DIR]

Why not a YAML-only test: a chart is Go templates; only Helm's engine says what it renders
(helm-python-sdk binds Helm v4's Go SDK), and only the API schemas say whether Kubernetes would
accept it (kubernetes-validate bundles them; strict: unknown fields are errors too). Runs with
the tools venv of deploy/helm/tools-requirements.txt, never the project's.

Prints one JSON object (documents rendered, or the problem) and exits 0 valid,
3 RENDER_FAILED (a template or a required value), 4 SCHEMA_INVALID (a manifest Kubernetes
would refuse), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from helm_python import Chart, HelmError


def _set(values: dict[str, Any], dotted: str, value: Any) -> None:
    """helm's --set path syntax for plain keys (a.b.c); keys may contain '-' (enrolled.st-marys)."""
    keys = dotted.split(".")
    node = values
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def render(chart_dir: Path, values: dict[str, Any], name: str, namespace: str) -> dict[str, str]:
    chart = Chart.load(str(chart_dir))
    try:
        return chart.render(values, name=name, namespace=namespace, is_install=True)
    finally:
        chart.close()


def validate(rendered: dict[str, str], kube_version: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    documents, invalid = [], []
    for template, text in sorted(rendered.items()):
        if not template.endswith((".yaml", ".yml")) or Path(template).name.startswith("_"):
            continue  # NOTES.txt and helpers are not manifests (helm template skips them too)
        for document in yaml.safe_load_all(text):
            if not document:
                continue
            entry = {"template": template, "kind": str(document.get("kind")),
                     "name": str((document.get("metadata") or {}).get("name"))}
            try:
                kubernetes_validate.validate(document, kube_version, strict=True)
            except Exception as error:  # ValidationError, InvalidSchemaError, VersionNotSupportedError
                invalid.append(entry | {"problem": f"{type(error).__name__}: {str(error).splitlines()[0][:400]}"})
            documents.append(entry)
    return documents, invalid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chart", type=Path)
    parser.add_argument("--set-file", action="append", default=[], metavar="KEY=PATH")
    parser.add_argument("--set-json", action="append", default=[], metavar="KEY=JSON")
    parser.add_argument("--name", default="cardiology")
    parser.add_argument("--namespace", default="healthfed")
    parser.add_argument("--kube-version", default="1.30")
    parser.add_argument("--out", type=Path, default=None, help="also write the rendered manifests here")
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    try:
        for item in args.set_file:
            key, _, path = item.partition("=")
            _set(values, key, Path(path).read_text(encoding="utf-8"))
        for item in args.set_json:
            key, _, text = item.partition("=")
            _set(values, key, json.loads(text))
    except (OSError, ValueError) as error:
        print(json.dumps({"ok": False, "code": "USAGE", "message": str(error)}))
        return 2
    try:
        rendered = render(args.chart, values, args.name, args.namespace)
    except HelmError as error:
        print(json.dumps({"ok": False, "code": "RENDER_FAILED", "message": str(error)[:1000]}))
        return 3
    documents, invalid = validate(rendered, args.kube_version)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for template, text in rendered.items():
            (args.out / Path(template).name).write_text(text, encoding="utf-8")
    if invalid:
        print(json.dumps({"ok": False, "code": "SCHEMA_INVALID", "invalid": invalid, "documents": documents}))
        return 4
    print(json.dumps({"ok": True, "kube_version": args.kube_version, "documents": documents}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
