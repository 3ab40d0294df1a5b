"""Write the missing Unity `.meta` files of the UPM package (unity_plugin/), each with a new random GUID.

    python scripts/unity_meta.py          create what is missing, list what it wrote

Unity needs a committed .meta beside every file and folder of a package (an immutable package cannot get
them at import), and the GUIDs must be unique: assets reference each other by them. Existing .meta files are
left alone, so GUIDs never change. Hidden entries and folders ending in ``~`` are not imported and get none.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unity_plugin"

_FOLDER = "folderAsset: yes\nDefaultImporter:\n  externalObjects: {}\n  userData: \n  assetBundleName: \n  assetBundleVariant: \n"
_SCRIPT = (
    "MonoImporter:\n  externalObjects: {}\n  serializedVersion: 2\n  defaultReferences: []\n  executionOrder: 0\n"
    "  icon: {instanceID: 0}\n  userData: \n  assetBundleName: \n  assetBundleVariant: \n"
)
_IMPORTERS = {
    ".cs": _SCRIPT,
    ".asmdef": "AssemblyDefinitionImporter:\n  externalObjects: {}\n  userData: \n  assetBundleName: \n  assetBundleVariant: \n",
    ".json": "PackageManifestImporter:\n  externalObjects: {}\n  userData: \n  assetBundleName: \n  assetBundleVariant: \n",
}
_TEXT = "TextScriptImporter:\n  externalObjects: {}\n  userData: \n  assetBundleName: \n  assetBundleVariant: \n"


def _imported(path: Path) -> bool:
    rel = path.relative_to(PACKAGE)
    return not any(p.startswith(".") or p.endswith("~") for p in rel.parts) and path.suffix != ".meta"


def main() -> int:
    for path in sorted(PACKAGE.rglob("*")):
        meta = path.with_name(path.name + ".meta")
        if not _imported(path) or meta.exists():
            continue
        body = _FOLDER if path.is_dir() else _IMPORTERS.get(path.suffix, _TEXT)
        if path.name != "package.json" and path.suffix == ".json":
            body = _TEXT
        meta.write_text(f"fileFormatVersion: 2\nguid: {uuid.uuid4().hex}\n{body}")
        print(meta.relative_to(PACKAGE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
