#!/usr/bin/env python3
"""Regenerates proto/k8s/ from checkouts of kubernetes/api and kubernetes/apimachinery.

    scripts/k8s-protos.py <kubernetes/api checkout> <kubernetes/apimachinery checkout>

km apiserver speaks Kubernetes' protobuf encoding by reflection over these files
(crates/km-apiserver/build.rs compiles them into a descriptor set). Two outputs:

- proto/k8s/k8s.io/.../generated.proto: the message definitions of the API groups km
  serves and of apimachinery, without their comments (names, field numbers and types are
  wire facts; nothing else is kept);
- proto/k8s/json.txt: what the messages do not say about Kubernetes' JSON, per message:
  `omit-zero <message> <fields>`: the scalar fields that Go writes on the wire even when they
  are zero (non-pointer Go fields) while its JSON leaves them out (`omitempty`). Decoding
  protobuf, km drops those fields when they hold their zero value, so a protobuf request
  means exactly what the same request in JSON means; pointer fields keep their zeros
  (`replicas: 0` is not "unset").
  `inline <message> <field>`: a field whose message's fields appear in the JSON of the
  enclosing object itself (Go's `json:",inline"`, e.g. a Volume's VolumeSource).
  `patch <message> <field> <strategy> [<merge key>]`: the field's strategic-merge-patch
  strategy (`merge`, `retainKeys`, `merge,retainKeys`) and a list's merge key, from the Go
  tags `patchStrategy` and `patchMergeKey`.
  `list <message> <field> <atomic|set|map> [<key>,...]`: a list's type for server-side apply,
  from the markers `+listType` and `+listMapKey` above the Go field (a list without one merges
  as its patch strategy says, or is atomic).
  `atomic <message> [<field>]`: a struct (`+structType=atomic` above the type) or a field
  (`+structType=atomic`, `+mapType=atomic`) that server-side apply owns and replaces whole.
"""

import os
import re
import sys

GROUPS = [
    "core/v1",
    "apps/v1",
    "batch/v1",
    "coordination/v1",
    "policy/v1",
    "autoscaling/v1",
    "rbac/v1",
    "authorization/v1",
    "authentication/v1",
    "discovery/v1",
    "networking/v1",
]
MACHINERY = [
    "pkg/api/resource",
    "pkg/apis/meta/v1",
    "pkg/runtime",
    "pkg/runtime/schema",
    "pkg/util/intstr",
]
SCALARS = {"string", "bool", "int32", "int64", "double", "float", "bytes"}


def strip(proto_text):
    """The proto without comments, license or blank runs."""
    text = re.sub(r"/\*.*?\*/", "", proto_text, flags=re.S)
    lines = []
    for line in text.splitlines():
        line = re.sub(r"//.*$", "", line).rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip() + "\n"


def proto_fields(text):
    """message name -> {field name: proto type} of a stripped proto file."""
    out, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^message (\w+) \{", line)
        if m:
            current = out.setdefault(m.group(1), {})
            continue
        if line == "}":
            current = None
            continue
        m = re.match(r"^\s+(?:optional|required|repeated)\s+([\w.]+)\s+(\w+)\s*=\s*\d+", line)
        if m and current is not None:
            current[m.group(2)] = m.group(1)
    return out


FIELD = re.compile(r'^\s*([\w.]+)(?:\s+(\S+))?\s+`(.*)`')


MARKER = re.compile(r"^\s*//\s*\+(listType|listMapKey|structType|mapType)=(\w+)\s*$")


def go_fields(go_text):
    """struct name -> (proto names of non-pointer fields whose JSON tag has omitempty,
    proto names of inline fields, {proto name: (patch strategy, merge key)},
    {proto name: (list type, [map keys])}, atomic fields, whether the struct is atomic)."""
    out, current, markers = {}, None, []
    for line in go_text.splitlines():
        marker = MARKER.match(line)
        if marker:
            markers.append(marker.groups())
            continue
        if not line.strip().startswith("//"):
            pending, markers = markers, []
        else:
            continue
        m = re.match(r"^type (\w+) struct \{", line)
        if m:
            current = out.setdefault(m.group(1), (set(), set(), {}, {}, set(), []))
            if ("structType", "atomic") in pending:
                current[5].append(True)
            continue
        if line.startswith("}"):
            current = None
            continue
        if current is None:
            continue
        m = FIELD.match(line)
        if not m:
            continue
        name, go_type, tags = m.groups()
        go_type = go_type or name  # an embedded field is its type
        if 'protobuf:"' not in tags:
            continue
        json = re.search(r'json:"([^"]*)"', tags)
        named = re.search(r'protobuf:"[^"]*name=(\w+)', tags)
        # Without name=, the proto field is named after the Go field, first letter lowered.
        proto = named.group(1) if named else name.split(".")[-1][:1].lower() + name.split(".")[-1][1:]
        if not json:
            continue
        for key, value in pending:
            if key == "listType":
                current[3][proto] = (value, current[3].get(proto, ("", []))[1])
            elif key == "listMapKey":
                kind, keys = current[3].get(proto, ("map", []))
                current[3][proto] = (kind, keys + [value])
            elif value == "atomic":
                current[4].add(proto)
        strategy = re.search(r'patchStrategy:"([^"]*)"', tags)
        if strategy:
            key = re.search(r'patchMergeKey:"([^"]*)"', tags)
            current[2][proto] = (strategy.group(1), key.group(1) if key else "")
        options = json.group(1).split(",")
        if json.group(1).startswith(",") and "inline" in options[1:]:
            current[1].add(proto)
            continue
        if go_type.startswith(("*", "[]", "map[")):
            continue
        if "omitempty" in options[1:]:
            current[0].add(proto)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    api, machinery = sys.argv[1], sys.argv[2]
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto", "k8s")
    sources = [(os.path.join(api, g), f"k8s.io/api/{g}") for g in GROUPS]
    sources += [(os.path.join(machinery, p), f"k8s.io/apimachinery/{p}") for p in MACHINERY]
    omit = []
    for src, path in sources:
        with open(os.path.join(src, "generated.proto")) as f:
            text = strip(f.read())
        header = (
            f"// Kubernetes' {path} wire definitions: written by scripts/k8s-protos.py from the\n"
            "// upstream generated.proto, comments removed. Do not edit; never renumber.\n\n"
        )
        os.makedirs(os.path.join(root, path), exist_ok=True)
        with open(os.path.join(root, path, "generated.proto"), "w") as f:
            f.write(header + text)
        package = re.search(r"^package ([\w.]+);", text, re.M).group(1)
        fields = proto_fields(text)
        go = ""
        for name in sorted(os.listdir(src)):
            if name.endswith(".go") and not name.endswith("_test.go") and "generated" not in name:
                with open(os.path.join(src, name)) as f:
                    go += f.read() + "\n"
        for struct, (names, inline, patches, lists, atomic, whole) in sorted(go_fields(go).items()):
            if struct not in fields:
                continue
            if whole:
                omit.append(f"atomic {package}.{struct}")
            for name in sorted(atomic):
                if name in fields[struct]:
                    omit.append(f"atomic {package}.{struct} {name}")
            for name, (kind, keys) in sorted(lists.items()):
                if name in fields[struct]:
                    omit.append(f"list {package}.{struct} {name} {kind} {','.join(keys)}".rstrip())
            for name, (strategy, key) in sorted(patches.items()):
                if name in fields.get(struct, {}):
                    omit.append(f"patch {package}.{struct} {name} {strategy} {key}".rstrip())
            scalar = sorted(n for n in names if fields.get(struct, {}).get(n) in SCALARS)
            if scalar:
                omit.append(f"omit-zero {package}.{struct} {' '.join(scalar)}")
            for name in sorted(inline):
                if name in fields.get(struct, {}):
                    omit.append(f"inline {package}.{struct} {name}")
    with open(os.path.join(root, "json.txt"), "w") as f:
        f.write("# Written by scripts/k8s-protos.py; see there.\n")
        f.write("\n".join(omit) + "\n")


if __name__ == "__main__":
    main()
