#!/usr/bin/env python3
"""docker-py scenarios: a client stack no one here wrote, run against an engine or a gateway.

    python3 tests/py/scenarios.py --base-url tcp://127.0.0.1:2375   (or unix:///path/docker.sock)

Runs every scenario with docker-py 7.x (high-level `DockerClient` and low-level `APIClient`)
and prints one JSON object: {scenario: result}. Results are meant to be compared between a
run straight against one engine and a run through a busbar gateway (tests/tests/dockerpy.rs),
so they hold only user-visible values that do not depend on where things run: no IDs, no
timestamps, no node names. The per-run random suffix of every name is replaced by `<sfx>`.
A scenario that raises unexpectedly records {"unexpected": "Class: message"}.

The key "_meta" is not a scenario and is not compared: it holds the `Node.Name` the gateway
adds to `inspect` for each container the scenarios created (empty lists against an engine),
which the Rust test uses to check that the gateway run really spread over several nodes.

Everything a scenario creates has a unique name and is removed in a `finally` block.
"""

import argparse
import io
import json
import re
import secrets
import socket
import sys
import tarfile
import time

import docker
from docker import errors
from docker.utils import socket as dsocket

IMAGE = "busybox"
SFX = secrets.token_hex(4)
TIMEOUT = 60  # seconds for any single API call

SCENARIOS = []
META = {"nodes": []}


def scenario(fn):
    SCENARIOS.append(fn)
    return fn


def name(what):
    return f"pyscn-{SFX}-{what}"


HEX_ID = re.compile(r"\b[0-9a-f]{64}\b")


def norm(value):
    """Replaces this run's random suffix and full object IDs (in error messages) so that two
    runs compare equal."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return HEX_ID.sub("<id>", value.replace(SFX, "<sfx>"))
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [norm(v) for v in value]
    return value


NODE_PREFIX = re.compile(r"^node\d+/")


def local_names(names):
    """Volume and network names as one engine would list them.

    Through a cluster gateway, local volumes and networks are listed as `node/name` (README,
    "The cluster"), and a name may exist on several nodes when it was made there one by one.
    Strip the `nodeN/` prefix and de-duplicate: what is left is the set of names a client of a
    single engine sees.
    """
    return sorted({NODE_PREFIX.sub("", n) for n in names})


def error_of(exc):
    """What a user sees of a docker-py exception: its class, the HTTP status, the message."""
    out = {"class": type(exc).__name__}
    if isinstance(exc, errors.APIError):
        out["status"] = exc.status_code
        out["explanation"] = norm(exc.explanation)
    return out


def expect_error(fn):
    try:
        fn()
    except errors.DockerException as e:
        return error_of(e)
    return {"class": None}


def note_node(client, container_id):
    """Records where the container runs (the gateway's `Node` object), outside the results."""
    info = client.api.inspect_container(container_id)
    META["nodes"].append((info.get("Node") or {}).get("Name"))


def force_remove(client, ref):
    try:
        client.api.remove_container(ref, force=True, v=True)
    except errors.NotFound:
        pass


def wait_for(cond, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def read_demuxed(sock):
    """Reads a multiplexed (non-TTY) attach/exec stream to its end: (stdout, stderr) text."""
    frames = (dsocket.demux_adaptor(*f) for f in dsocket.frames_iter(sock, tty=False))
    out, err = dsocket.consume_socket_output(frames, demux=True)
    sock.close()
    return (out or b"").decode(), (err or b"").decode()


def tar_of(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Scenarios. Each takes a DockerClient and returns something JSON-able and comparable.


@scenario
def ping_and_version(client):
    version = client.version()
    return {
        "ping": client.ping(),
        "api_ping": client.api.ping(),
        # version="auto": docker-py asked GET /version and uses its ApiVersion.
        "negotiated": client.api.api_version,
        "negotiated_is_server_api": client.api.api_version == version.get("ApiVersion"),
        "version_keys": sorted(k for k in ("ApiVersion", "MinAPIVersion", "Os", "Arch") if k in version),
        "os": version.get("Os"),
        "arch": version.get("Arch"),
    }


@scenario
def run_echo(client):
    out = client.containers.run(IMAGE, "echo hello", remove=True)
    return {"output": out.decode()}


@scenario
def run_stdout_and_stderr(client):
    both = client.containers.run(IMAGE, ["sh", "-c", "echo out; echo err >&2"], remove=True, stderr=True)
    only_out = client.containers.run(IMAGE, ["sh", "-c", "echo out; echo err >&2"], remove=True)
    return {"both": sorted(both.decode().split()), "stdout_only": only_out.decode()}


@scenario
def run_nonzero_exit(client):
    n = name("exit")
    try:
        client.containers.run(IMAGE, ["sh", "-c", "echo failing >&2; exit 3"], name=n)
    except errors.ContainerError as e:
        return {"class": type(e).__name__, "exit_status": e.exit_status, "stderr": e.stderr.decode()}
    finally:
        force_remove(client, n)
    return {"class": None}


@scenario
def detached_lifecycle(client):
    n = name("det")
    # PID 1 traps SIGTERM, so `stop` ends it at once with a known status.
    cmd = ["sh", "-c", "trap 'echo bye; exit 3' TERM; echo started; sleep 300 & wait"]
    result = {}
    try:
        c = client.containers.run(IMAGE, cmd, name=n, detach=True, labels={"scn": "det"})
        note_node(client, c.id)
        c.reload()
        result["name"] = norm(c.name)
        result["status"] = c.status
        result["image_tags"] = sorted(c.image.tags)
        result["labels"] = c.labels
        wait_for(lambda: b"started" in c.logs(), "the container's first line")
        result["logs"] = c.logs().decode()
        code, out = c.exec_run("echo hi")
        result["exec"] = {"exit_code": code, "output": out.decode()}
        code, out = c.exec_run(["sh", "-c", "echo oops >&2; exit 7"])
        result["exec_fail"] = {"exit_code": code, "output": out.decode()}
        code, (out, err) = c.exec_run(["sh", "-c", "echo to-out; echo to-err >&2"], demux=True)
        result["exec_demux"] = {"exit_code": code, "stdout": out.decode(), "stderr": err.decode()}
        code, stream = c.exec_run(["sh", "-c", "for i in 1 2 3; do echo line$i; done"], stream=True)
        result["exec_stream"] = b"".join(stream).decode()
        result["top_titles"] = c.top()["Titles"][:1]
        result["by_name"] = norm(client.containers.get(n).name)
        c.stop(timeout=10)
        result["wait"] = c.wait(timeout=TIMEOUT)["StatusCode"]
        c.reload()
        result["status_after_stop"] = c.status
        result["logs_after_stop"] = c.logs().decode()
        result["exec_on_stopped"] = expect_error(lambda: c.exec_run("true"))
        c.remove()
        result["get_after_remove"] = expect_error(lambda: client.containers.get(n))
    finally:
        force_remove(client, n)
    return result


@scenario
def rename_and_logs_follow(client):
    n, renamed = name("ren"), name("renamed")
    result = {}
    try:
        c = client.containers.create(IMAGE, ["sh", "-c", "for i in 1 2 3; do echo tick$i; sleep 0.2; done"], name=n)
        note_node(client, c.id)
        c.rename(renamed)
        c.reload()
        result["renamed"] = norm(c.name)
        result["old_name"] = expect_error(lambda: client.containers.get(n))
        c.start()
        result["follow"] = b"".join(c.logs(stream=True, follow=True)).decode()
        result["wait"] = c.wait(timeout=TIMEOUT)["StatusCode"]
    finally:
        force_remove(client, n)
        force_remove(client, renamed)
    return result


@scenario
def attach_stdin_half_close(client):
    """`docker run -i` the docker-py way: create with stdin open, attach a raw socket before
    start, write, half-close stdin, read the multiplexed stream to its end."""
    n = name("att")
    api = client.api
    try:
        # stdin_open without detach: docker-py sets AttachStdin and StdinOnce, so closing our
        # side of stdin closes the container's.
        cid = api.create_container(IMAGE, ["sh", "-c", "cat; echo done >&2"], stdin_open=True, name=n)["Id"]
        note_node(client, cid)
        sock = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        raw = getattr(sock, "_sock", sock)
        raw.settimeout(TIMEOUT)
        api.start(cid)
        raw.sendall(b"hello attach\n")
        raw.sendall(b"second line\n")
        raw.shutdown(socket.SHUT_WR)
        out, err = read_demuxed(sock)
        code = api.wait(cid, timeout=TIMEOUT)["StatusCode"]
        return {"stdout": out, "stderr": err, "exit": code}
    finally:
        force_remove(client, n)


@scenario
def exec_low_level(client):
    n = name("exe")
    api = client.api
    result = {}
    try:
        c = client.containers.run(IMAGE, ["sleep", "300"], name=n, detach=True)
        note_node(client, c.id)
        ex = api.exec_create(c.id, ["sh", "-c", "echo low; echo level >&2; exit 5"])
        out = api.exec_start(ex["Id"], socket=False, demux=True)
        info = api.exec_inspect(ex["Id"])
        result["plain"] = {
            "stdout": out[0].decode(),
            "stderr": out[1].decode(),
            "exit_code": info["ExitCode"],
            "running": info["Running"],
        }
        # An interactive exec over a hijacked socket: stdin in, stdout back, half-close.
        ex = api.exec_create(c.id, ["cat"], stdin=True)
        sock = api.exec_start(ex["Id"], socket=True)
        raw = getattr(sock, "_sock", sock)
        raw.settimeout(TIMEOUT)
        raw.sendall(b"through exec\n")
        raw.shutdown(socket.SHUT_WR)
        out, err = read_demuxed(sock)
        wait_for(lambda: not api.exec_inspect(ex["Id"])["Running"], "the exec to end")
        result["interactive"] = {
            "stdout": out,
            "stderr": err,
            "exit_code": api.exec_inspect(ex["Id"])["ExitCode"],
        }
        result["no_such_exec"] = expect_error(lambda: api.exec_inspect("0" * 64))
    finally:
        force_remove(client, n)
    return result


@scenario
def archive_round_trip(client):
    n = name("arc")
    result = {}
    try:
        c = client.containers.run(IMAGE, ["sleep", "300"], name=n, detach=True)
        note_node(client, c.id)
        data = tar_of({"hello.txt": b"archive data\n", "sub/nested.txt": b"nested\n"})
        result["put"] = c.put_archive("/tmp", data)
        result["cat"] = c.exec_run("cat /tmp/hello.txt /tmp/sub/nested.txt")[1].decode()
        stream, stat = c.get_archive("/tmp/sub")
        result["stat"] = {"name": stat["name"], "is_dir": bool(stat["mode"] & (1 << 31))}
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream)), mode="r") as tar:
            result["members"] = sorted(m.name for m in tar.getmembers())
            result["nested"] = tar.extractfile("sub/nested.txt").read().decode()
        stream, stat = c.get_archive("/tmp/hello.txt")
        result["file_stat"] = {"name": stat["name"], "size": stat["size"]}
        result["missing"] = expect_error(lambda: c.get_archive("/no/such/path"))
    finally:
        force_remove(client, n)
    return result


def busybox_tags(client):
    return sorted({t for image in client.images.list() for t in image.tags if "busybox" in t})


@scenario
def images_list_and_get(client):
    image = client.images.get(IMAGE)
    return {
        "busybox_tags": busybox_tags(client),
        "get_tags": sorted(image.tags),
        "filtered": sorted({t for i in client.images.list(name=IMAGE) for t in i.tags}),
        "missing": expect_error(lambda: client.images.get("no-such-image-xyz:nope")),
    }


@scenario
def image_tag_and_remove(client):
    tag = f"pytest-tag-{SFX}"
    ref = f"{IMAGE}:{tag}"
    result = {}
    try:
        result["tag"] = client.images.get(IMAGE).tag(IMAGE, tag)
        result["after_tag"] = norm(busybox_tags(client))
        result["get_tagged"] = norm(sorted(client.images.get(ref).tags))
        client.images.remove(ref)
        result["after_remove"] = norm(busybox_tags(client))
        result["get_removed"] = expect_error(lambda: client.images.get(ref))
        result["remove_again"] = expect_error(lambda: client.images.remove(ref))
    finally:
        try:
            client.images.remove(ref)
        except errors.ImageNotFound:
            pass
    return result


@scenario
def volumes(client):
    n = name("vol")
    result = {}
    try:
        v = client.volumes.create(name=n, driver="local", labels={"scn": "vol"})
        result["created"] = {"name": norm(local_names([v.name])), "driver": v.attrs.get("Driver")}
        listed = client.volumes.list(filters={"name": n})
        result["listed"] = norm(local_names(x.name for x in listed))
        result["labels"] = sorted({json.dumps(x.attrs.get("Labels")) for x in listed})
        # Create and inspect answer the same volume (through a gateway: the same node's).
        result["inspect_is_create"] = client.volumes.get(n).attrs == v.attrs
        # A writer, then readers in later containers (`-v` and `--mount`): the data persists,
        # as on one engine (through a gateway: every one of them runs where the volume is).
        mounted = {n: {"bind": "/data"}}
        result["mounted"] = client.containers.run(
            IMAGE, ["sh", "-c", "echo persisted > /data/f && cat /data/f"], volumes=mounted, remove=True
        ).decode()
        reader = client.containers.run(IMAGE, ["cat", "/data/f"], volumes=mounted, detach=True)
        try:
            note_node(client, reader.id)
            reader.wait(timeout=TIMEOUT)
            result["read_back"] = reader.logs().decode()
        finally:
            reader.remove(force=True)
        mount = docker.types.Mount("/m", n, type="volume")
        result["read_by_mount"] = client.containers.run(IMAGE, ["cat", "/m/f"], mounts=[mount], remove=True).decode()
        client.volumes.get(n).remove()
        result["after_remove"] = norm(local_names(x.name for x in client.volumes.list(filters={"name": n})))
        result["get_removed"] = expect_error(lambda: client.volumes.get(n))
    finally:
        for v in client.volumes.list(filters={"name": n}):
            try:
                v.remove(force=True)
            except errors.NotFound:
                pass
    return result


@scenario
def networks(client):
    n, cn = name("net"), name("netc")
    result = {}
    try:
        net = client.networks.create(n, driver="bridge", labels={"scn": "net"})
        result["created"] = norm(local_names([net.name]))
        result["listed"] = norm(local_names(x.name for x in client.networks.list(names=[n])))
        result["get"] = norm(local_names([client.networks.get(net.id).name]))
        result["labels"] = client.networks.get(net.id).attrs.get("Labels")
        # A container on that network, then disconnected from it. Through a gateway a bridge
        # network exists on one node only, and the container must land there. Swarm classic
        # pinned such a container to its network's node; busbar does not (yet): this passes
        # through the gateway only because, on an idle cluster, the default spread strategy
        # puts the network and the container on the same least loaded node.
        c = client.containers.run(IMAGE, ["sleep", "300"], name=cn, detach=True, network=n)
        note_node(client, c.id)
        c.reload()
        result["container_networks"] = norm(local_names(c.attrs["NetworkSettings"]["Networks"]))
        net.reload()
        result["net_containers"] = norm(sorted(x.name for x in net.containers))
        net.disconnect(c)
        c.reload()
        result["after_disconnect"] = norm(local_names(c.attrs["NetworkSettings"]["Networks"]))
        c.remove(force=True)
        net.remove()
        result["after_remove"] = norm(local_names(x.name for x in client.networks.list(names=[n])))
        result["get_removed"] = expect_error(lambda: client.networks.get(net.id))
    finally:
        force_remove(client, cn)
        for x in client.networks.list(names=[n]):
            try:
                x.remove()
            except errors.NotFound:
                pass
    return result


@scenario
def list_with_filters(client):
    prefix = name("lst")
    names = [f"{prefix}{i}" for i in range(3)]
    result = {}
    try:
        for i, n in enumerate(names):
            c = client.containers.create(IMAGE, "true", name=n, labels={"scn": f"lst{i}"})
            note_node(client, c.id)
        result["all_by_prefix"] = len(client.containers.list(all=True, filters={"name": prefix}))
        result["one_by_name"] = len(client.containers.list(all=True, filters={"name": names[1]}))
        result["running_by_prefix"] = len(client.containers.list(filters={"name": prefix}))
        result["by_label"] = norm(
            [c.name for c in client.containers.list(all=True, filters={"label": "scn=lst2"}) if prefix in c.name]
        )
        result["names"] = norm(sorted(c.name for c in client.containers.list(all=True, filters={"name": prefix})))
        sparse = client.containers.list(all=True, sparse=True, filters={"name": prefix})
        result["sparse_count"] = len(sparse)
        result["duplicate_name"] = expect_error(lambda: client.containers.create(IMAGE, "true", name=names[0]))
    finally:
        for n in names:
            force_remove(client, n)
    return result


@scenario
def events(client):
    n = name("evt")
    since = int(time.time()) - 1
    try:
        client.containers.run(IMAGE, "true", name=n)
    finally:
        force_remove(client, n)
    until = int(time.time()) + 1
    actions = []
    for ev in client.events(decode=True, since=since, until=until, filters={"container": n}):
        if ev.get("Type") == "container" and (ev.get("Actor") or {}).get("Attributes", {}).get("name") == n:
            actions.append(ev.get("Action") or ev.get("status"))
    wanted = [a for a in actions if a in ("create", "start", "die", "destroy")]
    return {"actions": wanted, "has_create_start_die": {"create", "start", "die"} <= set(actions)}


@scenario
def errors_seen_by_users(client):
    return {
        "get_missing": expect_error(lambda: client.containers.get("no-such-container-xyz")),
        "create_bad_image": expect_error(lambda: client.containers.create("no-such-image-xyz:nope", "true")),
        "remove_missing": expect_error(lambda: client.api.remove_container("no-such-container-xyz")),
        "logs_missing": expect_error(lambda: client.api.logs("no-such-container-xyz")),
        "volume_missing": expect_error(lambda: client.volumes.get("no-such-volume-xyz")),
        "network_missing": expect_error(lambda: client.networks.get("no-such-network-xyz")),
    }


@scenario
def swarm_calls_of_a_non_swarm_engine(client):
    """What a test suite's teardown calls: `swarm leave --force` and the swarm inspect."""
    return {
        "leave": expect_error(lambda: client.swarm.leave(force=True)),
        "inspect": expect_error(lambda: client.api.inspect_swarm()),
        "services": expect_error(lambda: client.services.list()),
        "nodes": expect_error(lambda: client.nodes.list()),
    }


@scenario
def info_and_ping(client):
    info = client.info()
    res = client.api._get(client.api._url("/_ping"))
    images = client.api.images(all=True)
    return {
        # Every key an engine gives. A gateway adds one: `SystemStatus`, the Swarm standalone
        # API's per-node block (which engines leave out, and the docker CLI prints).
        "keys": sorted(k for k in info if k != "SystemStatus"),
        "types": {k: type(v).__name__ for k, v in info.items() if v is not None and k != "SystemStatus"},
        "swarm": (info.get("Swarm") or {}).get("LocalNodeState"),
        "images_is_list_by_id": info["Images"] == len({i["Id"] for i in images}),
        "ping_headers": sorted(
            h for h in ("Api-Version", "Ostype", "Server", "Docker-Experimental", "Cache-Control", "Pragma")
            if h in res.headers
        ),
        "ping_ostype": res.headers.get("Ostype"),
        "ping_cache_control": res.headers.get("Cache-Control"),
    }


def container_ids(client):
    """Every container's ID, from one list call (`containers.list` inspects each one after the
    list, and a container removed in between is a NotFound)."""
    return {c["Id"] for c in client.api.containers(all=True)}


def dockerfile_context(text):
    return tar_of({"Dockerfile": text.encode()})


@scenario
def build_then_run(client):
    """`docker build -t app . && docker run app`: the image exists where it was built only."""
    tag = f"pyscn-{SFX}-built:latest"
    before = container_ids(client)
    result = {}
    try:
        image, logs = client.images.build(
            fileobj=io.BytesIO(dockerfile_context(f"FROM {IMAGE}\nRUN echo built > /built\n")),
            custom_context=True,
            tag=tag,
            rm=True,
        )
        result["tags"] = norm(image.tags)
        result["run"] = client.containers.run(tag, ["cat", "/built"], remove=True).decode()
        c = client.containers.run(tag, ["true"], detach=True)
        note_node(client, c.id)
        c.wait(timeout=TIMEOUT)
        c.remove()
        result["left_by_build"] = sorted(container_ids(client) - before)
    finally:
        try:
            client.images.remove(tag, force=True)
        except errors.ImageNotFound:
            pass
    return result


@scenario
def build_cut_short_leaves_nothing(client):
    """A client that leaves a build mid-step: the engine cancels the build and removes its
    container, before the next call can see it."""
    before = container_ids(client)
    context = dockerfile_context(f"FROM {IMAGE}\nRUN sleep 30\n")
    res = client.api._post(
        client.api._url("/build"),
        data=context,
        params={"rm": "1", "forcerm": "0", "nocache": "1"},
        headers={"Content-Type": "application/x-tar"},
        stream=True,
    )
    saw_step = False
    for line in res.iter_lines():
        if b"Running in" in line:  # the step's container exists
            saw_step = True
            break
    res.close()
    # The engine cancels the build as soon as the connection closes, and kills and removes its
    # container (its step would run 30 s). Through a gateway that did not pass the close on,
    # the container stayed up until the step ended.
    try:
        wait_for(lambda: not (container_ids(client) - before), "the build's container to go", 10)
    except TimeoutError:
        pass
    return {
        "saw_step": saw_step,
        "left": sorted(container_ids(client) - before),
    }


@scenario
def image_save_and_load(client):
    tag = f"pyscn-{SFX}-load:latest"
    result = {}
    try:
        client.images.get(IMAGE).tag(tag)
        data = b"".join(client.api.get_image(tag))
        client.images.remove(tag)
        loaded = client.images.load(data)
        result["loaded_tags"] = norm(sorted(t for i in loaded for t in i.tags))
        result["get"] = norm(sorted(client.images.get(tag).tags))
        messages = list(client.api.load_image(data))
        result["low_level_messages"] = sorted({norm(m.get("stream", "")).strip() for m in messages})
    finally:
        try:
            client.images.remove(tag)
        except errors.ImageNotFound:
            pass
    return result


@scenario
def commit_a_container(client):
    names = [name(f"cmt{i}") for i in range(3)]
    repo = f"pyscn-{SFX}-committed"
    result = {"committed": []}
    try:
        # Three containers: through a gateway they spread, and each is committed where it is.
        for i, n in enumerate(names):
            c = client.containers.run(IMAGE, ["sh", "-c", f"echo {i} > /mark"], name=n, detach=True)
            note_node(client, c.id)
            c.wait(timeout=TIMEOUT)
            image = c.commit(repository=repo, tag=f"v{i}")
            result["committed"].append(norm(sorted(image.tags)))
            out = client.containers.run(f"{repo}:v{i}", ["cat", "/mark"], remove=True).decode()
            result.setdefault("marks", []).append(out)
        result["missing"] = expect_error(lambda: client.api.commit("no-such-container-xyz"))
    finally:
        for n in names:
            force_remove(client, n)
        for i in range(3):
            try:
                client.images.remove(f"{repo}:v{i}")
            except errors.ImageNotFound:
                pass
    return result


@scenario
def links_and_their_removal(client):
    db, web = name("lnkdb"), name("lnkweb")
    result = {}
    try:
        client.containers.run(IMAGE, ["sleep", "300"], name=db, detach=True)
        w = client.containers.run(IMAGE, ["sleep", "300"], name=web, detach=True, links={db: "database"})
        note_node(client, w.id)
        result["links"] = norm(client.api.inspect_container(web)["HostConfig"]["Links"])
        client.api.remove_container(f"{web}/database", link=True)
        result["after_removal"] = norm(client.api.inspect_container(web)["HostConfig"]["Links"])
        result["remove_again"] = expect_error(lambda: client.api.remove_container(f"{web}/database", link=True))
    finally:
        force_remove(client, web)
        force_remove(client, db)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="tcp://HOST:PORT or unix:///path")
    parser.add_argument("--only", action="append", help="run only these scenarios (repeatable)")
    args = parser.parse_args()

    client = docker.DockerClient(base_url=args.base_url, version="auto", timeout=TIMEOUT)
    results = {}
    for fn in SCENARIOS:
        if args.only and fn.__name__ not in args.only:
            continue
        started = time.monotonic()
        try:
            results[fn.__name__] = fn(client)
        except Exception as e:  # noqa: BLE001 - recorded, compared, and shown on failure
            results[fn.__name__] = {"unexpected": norm(f"{type(e).__name__}: {e}")}
        print(f"scenario {fn.__name__}: {time.monotonic() - started:.1f}s", file=sys.stderr)
    results["_meta"] = META
    json.dump(results, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
