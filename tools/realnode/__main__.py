"""python -m realnode up|down|status|image"""

from __future__ import annotations

import argparse
import json
import sys

from realnode import configs, host, images, node


def image(layout: node.NodeLayout) -> None:
    """Build the project's image and import it into the running node (once per image id)."""
    missing = images.tools_present()
    if missing:
        raise node.NodeError(f"missing: {', '.join(missing)} (`make real-deps` installs them)")
    if not node.healthy(layout):
        raise node.NodeError("the real node is not running: `make cluster-real` first")
    image_id = images.build_project_image()
    try:
        imported = json.loads(layout.imported.read_text())
    except (OSError, ValueError):
        imported = {}
    if imported.get(configs.OPERATOR_IMAGE) == image_id and images.node_has_image(
        layout.socket, configs.OPERATOR_IMAGE
    ):
        images.say(f"{configs.OPERATOR_IMAGE} ({image_id[:12]}) already in the node")
        return
    archive = layout.node / "images" / "operator.tar"
    images.export(configs.OPERATOR_IMAGE, archive)
    images.import_archive(layout.socket, archive)
    archive.unlink()
    layout.imported.write_text(json.dumps({**imported, configs.OPERATOR_IMAGE: image_id}))
    images.say(f"{configs.OPERATOR_IMAGE} ({image_id[:12]}) imported into the node (containerd namespace k8s.io)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m realnode", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "image", "capture"])
    args = parser.parse_args(argv)
    layout = node.DEFAULT_LAYOUT
    try:
        if args.command == "up":
            node.up(layout)
        elif args.command == "down":
            node.down(layout)
        elif args.command == "image":
            with images.storage_lock(), images.leaving_no_trace():
                image(layout)
        elif args.command == "capture":
            print(json.dumps(host.capture((str(layout.root),)), indent=1, sort_keys=True))
        else:
            return 0 if node.status(layout) else 1
    except (node.NodeError, images.ImageError, host.HostError) as error:
        print(f"realnode: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
