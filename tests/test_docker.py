"""The Docker setup (docker/), checked without a Docker engine.

No engine runs here, so these tests check what can be checked from the files: the base images are
pinned, every file the Dockerfile copies exists and is in its build context, the compose file has
the expected structure (two Orthanc nodes on one PostgreSQL index and one storage volume, ports on
127.0.0.1 only), and above all that the image runs the plugin with the configuration the other
tests use. For that, the Dockerfile's COPY steps are replayed into a folder standing for the
image, its RUN of docker/plugin_config.py is executed there, and the JSON it writes to
/etc/orthanc/ is compared with the configuration tests/orthanc_server.py builds from orthanc.json.
The environment variables of the compose files are then turned into Orthanc settings with the
image's documented naming rule and merged with that JSON, as the image's entrypoint does.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from consistent_anon.identity.config import parse_config
from orthanc_server import OrthancServer

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
COMPOSE = DOCKER / "docker-compose.yml"
COMPOSE_KEYFILE = DOCKER / "docker-compose.keyfile.yml"
README = DOCKER / "README.md"

ORTHANC_NODES = ("orthanc-a", "orthanc-b")
PLUGIN_CONFIG_FILE = "/etc/orthanc/consistent-anonymization.json"
EXPLORER_2_FILE = "/etc/orthanc/explorer-2.json"
#: The settings the image takes from orthanc.json; everything else is the image's own.
PLUGIN_SETTINGS = {"PythonScript", "PythonVerbose", "Python", "ConsistentAnonymization"}


# --- the Dockerfile ----------------------------------------------------------------------------
def dockerfile_steps(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    steps, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        instruction, _, arguments = text.partition(" ")
        steps.append((instruction.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return steps


def copy_steps(steps) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context."""
    copies = []
    for instruction, arguments in steps:
        if instruction in ("COPY", "ADD"):
            assert instruction == "COPY", "ADD fetches and unpacks: use COPY"
            words = shlex.split(arguments)
            assert not any(w.startswith("--") for w in words), f"COPY options are not replayed: {arguments}"
            assert "$" not in arguments, f"variables in COPY are not replayed: {arguments}"
            copies.append((words[:-1], words[-1]))
    return copies


def image_reference(reference: str) -> tuple[str, str | None]:
    """(name, tag) of an image reference; tag None when absent."""
    name, _, digest = reference.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        return name, tag
    return name, None if not digest else "@" + digest


def pinned_orthanc_tag(reference: str) -> bool:
    """orthancteam/orthanc with a release tag (YY.M.N, optionally -full): never latest or a branch."""
    name, tag = image_reference(reference)
    return name == "orthancteam/orthanc" and tag is not None and re.fullmatch(r"\d{2}\.\d{1,2}\.\d+(-full)?", tag) is not None


# --- .dockerignore, as Docker reads it ---------------------------------------------------------
def _ignore_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignore_patterns(path: Path = DOCKERIGNORE) -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        rules.append((negated, _ignore_regex(pattern.strip("/"))))
    return rules


def excluded(relative: str, rules) -> bool:
    """Whether the build context leaves this path out: the last rule matching it, or one of its
    parent folders, decides."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negated, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            result = not negated
    return result


def context_files(source: Path, rules) -> list[Path]:
    """The files of a COPY source that the build context holds."""
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    return [f for f in files if not excluded(f.relative_to(REPO).as_posix(), rules)]


# --- replaying the image build -----------------------------------------------------------------
def replay_build(root: Path) -> dict:
    """Copies what the Dockerfile copies into `root` (the image's /), runs its plugin_config.py step
    there and answers the JSON it wrote."""
    rules = ignore_patterns()
    run_config_steps = 0
    for instruction, arguments in dockerfile_steps():
        if instruction == "COPY":
            [(sources, destination)] = copy_steps([(instruction, arguments)])
            for source in sources:
                src = REPO / source
                target = root / destination.lstrip("/")
                for file in context_files(src, rules):
                    if src.is_dir():
                        path = target / file.relative_to(src)
                    else:
                        path = target / src.name if destination.endswith("/") else target
                    path.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(file, path)
        elif instruction == "RUN" and "plugin_config.py" in arguments:
            words = shlex.split(arguments)
            assert words[0] == "python3" and len(words) == 3, f"unexpected plugin_config step: {arguments}"
            script, output = words[1], words[2]
            assert output == PLUGIN_CONFIG_FILE
            done = subprocess.run([sys.executable, str(root / script.lstrip("/")), str(root / output.lstrip("/"))],
                                  capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")})
            assert done.returncode == 0, done.stderr
            run_config_steps += 1
        elif instruction == "RUN":
            assert re.search(r"\bpip install\b", arguments), f"a RUN step this test does not replay: {arguments}"
    assert run_config_steps == 1
    return json.loads((root / PLUGIN_CONFIG_FILE.lstrip("/")).read_text())


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    root = tmp_path_factory.mktemp("image").resolve()
    written = replay_build(root)
    # Paths as the image sees them.
    written["PythonScript"] = "/" + Path(written["PythonScript"]).relative_to(root).as_posix()
    return root, written


@pytest.fixture(scope="module")
def tests_settings():
    """The configuration the other tests run Orthanc with (nothing is started)."""
    server = OrthancServer()
    try:
        yield dict(server.settings), Path(server.workdir)
    finally:
        server.cleanup()


# --- compose files -----------------------------------------------------------------------------
_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
                       r"|(?P<bare>[A-Za-z_]\w*))")


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and $$, in every value."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg, current = match.group("op"), match.group("arg"), env.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return current if current is not None else arg
        if op in (":?", "?") and not current:
            raise ValueError(f"{name} is required: {arg}")
        return current or ""
    return _VARIABLE.sub(substitute, value)


def load_compose(*paths: Path, env: dict[str, str] | None = None) -> dict:
    """The compose files merged as `docker compose -f A -f B` does for what they use: mappings
    merged key by key, lists of secrets and volumes concatenated."""
    merged: dict = {}
    for path in paths:
        document = yaml.safe_load(path.read_text())
        document = {k: v for k, v in document.items() if not k.startswith("x-")}
        merged = _merge_compose(merged, interpolate(document, env or {}))
    return merged


def _merge_compose(base, extra):
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for key, value in extra.items():
            out[key] = _merge_compose(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(extra, list):
        return base + [v for v in extra if v not in base]
    return extra


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def published_ports(service: dict) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each published port."""
    result = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            result.append((entry.get("host_ip", ""), str(entry.get("published", "")), str(entry["target"])))
            continue
        spec = str(entry).split("/")[0]
        parts = spec.split(":")
        if len(parts) == 3:
            result.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            result.append(("", parts[0], parts[1]))
        else:
            result.append(("", "", parts[0]))
    return result


def loopback_only(service: dict) -> bool:
    return all(host == "127.0.0.1" and port for host, port, _ in published_ports(service))


# --- the image's environment variables, as its entrypoint reads them ---------------------------
#: The documented exceptions to the naming rule that these files use.
NON_STANDARD_NAMES = {
    "ORTHANC__POSTGRESQL__" + suffix: "PostgreSQL." + setting
    for suffix, setting in [("HOST", "Host"), ("PORT", "Port"), ("DATABASE", "Database"),
                            ("USERNAME", "Username"), ("PASSWORD", "Password"), ("ENABLE_INDEX", "EnableIndex"),
                            ("ENABLE_STORAGE", "EnableStorage"), ("LOCK", "Lock"), ("ENABLE_SSL", "EnableSsl")]
}


def setting_path(variable: str) -> list[str]:
    """ORTHANC__DICOM_WEB__ROOT -> ["DicomWeb", "Root"]: words capitalized, `__` one level down."""
    if variable in NON_STANDARD_NAMES:
        return NON_STANDARD_NAMES[variable].split(".")
    assert variable.startswith("ORTHANC__"), variable
    return ["".join(w[:1] + w[1:].lower() for w in level.split("_")) for level in variable[9:].split("__")]


def setting_value(text: str):
    """The image reads each value as JSON when it parses (numbers, booleans, objects), else as text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def node_configuration(image_json: dict, service: dict) -> dict:
    """/etc/orthanc/*.json, then the ORTHANC__* variables on top, as the entrypoint merges them."""
    config = dict(image_json)
    for variable, text in sorted(environment(service).items()):
        if variable.startswith("ORTHANC__"):
            patch: dict = {}
            node = patch
            *levels, last = setting_path(variable)
            for level in levels:
                node = node.setdefault(level, {})
            node[last] = setting_value(text)
            config = deep_merge(config, patch)
    return config


def orthanc_json() -> dict:
    return json.loads((REPO / "orthanc.json").read_text())


# =============================================================================================
# Pinned images
# =============================================================================================
def test_base_image_is_a_pinned_orthancteam_release():
    froms = [arguments for instruction, arguments in dockerfile_steps() if instruction == "FROM"]
    assert len(froms) == 1, froms
    assert "$" not in froms[0], "the base image must be written out, not taken from a build argument"
    assert pinned_orthanc_tag(froms[0].split()[0]), froms[0]


def test_compose_images_are_pinned():
    services = load_compose(COMPOSE)["services"]
    for name, service in services.items():
        if "build" in service:
            continue  # built from docker/Dockerfile, whose FROM is pinned
        _, tag = image_reference(service["image"])
        assert tag and tag != "latest", f"{name}: {service['image']} is not pinned"
    assert image_reference(services["postgres"]["image"]) == ("postgres", "15")


# =============================================================================================
# What the Dockerfile copies
# =============================================================================================
def test_every_copied_file_exists_in_the_build_context():
    services = load_compose(COMPOSE)["services"]
    for node in ORTHANC_NODES:
        build = services[node]["build"]
        assert (DOCKER / build["context"]).resolve() == REPO, "the build context is the repository's root"
        assert (REPO / build["dockerfile"]).resolve() == DOCKERFILE
    rules = ignore_patterns()
    copies = copy_steps(dockerfile_steps())
    assert copies
    for sources, _ in copies:
        for source in sources:
            path = REPO / source
            assert path.exists(), f"COPY {source}: no such file in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()
                                                   and "__pycache__" not in p.parts]
            assert files, f"COPY {source}: nothing to copy"
            for file in files:
                relative = file.relative_to(REPO).as_posix()
                assert not excluded(relative, rules), f"{relative} is copied but Dockerfile.dockerignore leaves it out"
    # The context leaves out what the image must not carry.
    for unwanted in (".venv/bin/python", ".git/config", "data/orthanc.run.json", "tests/test_docker.py",
                     "plugin/consistent_anon/__pycache__/config.cpython-311.pyc"):
        assert excluded(unwanted, rules), unwanted


def test_plugin_dependencies_are_installed_into_the_image_python():
    steps = dockerfile_steps()
    copies = {sources[0]: destination for sources, destination in copy_steps(steps) if len(sources) == 1}
    assert "requirements.txt" in copies
    pip = [arguments for instruction, arguments in steps if instruction == "RUN" and "pip install" in arguments]
    assert len(pip) == 1
    words = shlex.split(pip[0])
    # The system python3: the interpreter the image's libOrthancPython embeds.
    assert words[:4] == ["python3", "-m", "pip", "install"], pip[0]
    assert words[words.index("-r") + 1] == copies["requirements.txt"]
    order = [arguments for _, arguments in steps]
    assert order.index(pip[0]) > next(i for i, a in enumerate(order) if a.startswith("requirements.txt "))


def test_python_plugin_is_enabled():
    env = [arguments for instruction, arguments in dockerfile_steps() if instruction == "ENV"]
    assert any(re.fullmatch(r"PYTHON_PLUGIN_ENABLED[= ]\"?true\"?", e) for e in env), env


# =============================================================================================
# The plugin configuration the image writes is the tests' one
# =============================================================================================
def test_image_writes_the_plugin_configuration_the_tests_use(image, tests_settings):
    root, written = image
    settings, workdir = tests_settings
    base = orthanc_json()
    assert set(written) == PLUGIN_SETTINGS, "only the plugin's settings: the image keeps its own ports, storage, plugins"
    # The entrypoint substitutes environment variables in /etc/orthanc/*.json.
    assert "$" not in json.dumps(written)
    tests_section = {**settings["ConsistentAnonymization"], "PseudonymLookup": False}  # on for the tests only
    assert written["ConsistentAnonymization"] == tests_section == base["ConsistentAnonymization"]
    assert written["PythonVerbose"] == settings["PythonVerbose"] == base["PythonVerbose"]
    # The same script, at the same place in a copy of plugin/ as in the tests' copy.
    tests_script = Path(settings["PythonScript"])
    image_script = Path(written["PythonScript"])
    assert image_script.is_absolute()
    assert image_script.name == tests_script.name == Path(base["PythonScript"]).name
    assert image_script.parent.name == "plugin"
    assert (root / image_script.relative_to("/")).is_file()


def test_image_carries_the_plugin_as_in_the_repository(image):
    root, written = image
    image_plugin = root / Path(written["PythonScript"]).parent.relative_to("/")

    def files(folder: Path) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert files(image_plugin) == files(REPO / "plugin")


def test_image_ships_explorer_2_buttons_opening_the_plugin_pages(image):
    """OE2's study and series buttons (docs/explorer-2.md): GET buttons opening the plugin's pages
    with the resource's Orthanc ID, by a relative URL (OE2 resolves it against /ui/app/)."""
    root, _ = image
    shipped = json.loads((root / EXPLORER_2_FILE.lstrip("/")).read_text())
    assert shipped == json.loads((DOCKER / "explorer-2.json").read_text())
    assert "$" not in json.dumps(shipped)  # the entrypoint substitutes environment variables there
    assert set(shipped) == {"OrthancExplorer2"}, "only OE2's buttons: the image keeps its own settings"
    buttons = shipped["OrthancExplorer2"]["UiOptions"]["CustomButtons"]
    assert set(buttons) == {"study", "series"}
    for level, parameter in (("study", "study"), ("series", "series")):
        assert [(b["HttpMethod"], b["Url"].split("?")[0]) for b in buttons[level]] == [
            ("GET", "../../consistent-anonymization/ui/frames.html"),
            ("GET", "../../consistent-anonymization/ui/verify.html")]
        assert all(b["Url"].endswith(f"?{parameter}={{UUID}}") for b in buttons[level])
    ids = [b["Id"] for level in buttons.values() for b in level]
    assert len(set(ids)) == len(ids)


def test_plugin_config_script_follows_orthanc_json(tmp_path):
    """Change orthanc.json's plugin settings: the image's configuration changes with them."""
    sys.path.insert(0, str(DOCKER))
    try:
        import plugin_config
    finally:
        sys.path.remove(str(DOCKER))
    changed = orthanc_json()
    changed["ConsistentAnonymization"] = {"DefaultProject": "trial-7", "Projects": {"trial-7": {}},
                                          "UidRoot": "1.2.826.0.1.3680043.10.99", "FreshPseudonymsPerCall": True}
    changed["PythonVerbose"] = True
    changed["HttpPort"] = 1234
    (tmp_path / "orthanc.json").write_text(json.dumps(changed))
    written = plugin_config.plugin_settings(base=tmp_path / "orthanc.json", plugin_dir=Path("/opt/x/plugin"))
    assert written == {"PythonScript": "/opt/x/plugin/consistent_anonymization.py", "PythonVerbose": True,
                       "Python": changed["Python"], "ConsistentAnonymization": changed["ConsistentAnonymization"]}


# =============================================================================================
# docker-compose.yml
# =============================================================================================
@pytest.mark.parametrize("env", [{}, {"ORTHANC_A_HTTP_PORT": "9042", "ORTHANC_B_DICOM_PORT": "5243"}])
def test_ports_are_published_on_loopback_only(env):
    services = load_compose(COMPOSE, COMPOSE_KEYFILE, env=env)["services"]
    host_ports = []
    for name, service in services.items():
        assert loopback_only(service), f"{name} publishes {service.get('ports')}"
        host_ports += [port for _, port, _ in published_ports(service)]
    assert len(host_ports) == len(set(host_ports)), host_ports
    assert "postgres" in services and not services["postgres"].get("ports"), "PostgreSQL stays inside Docker"
    for node in ORTHANC_NODES:
        assert {target for _, _, target in published_ports(services[node])} == {"8042", "4242"}
    if env:
        assert ("127.0.0.1", "9042", "8042") in published_ports(services["orthanc-a"])


def test_compose_structure():
    compose = load_compose(COMPOSE)
    services = compose["services"]
    assert set(services) == {"postgres", *ORTHANC_NODES}
    postgres = services["postgres"]
    assert "healthcheck" in postgres
    assert any(v.split(":")[1] == "/var/lib/postgresql/data" and v.split(":")[0] in compose["volumes"]
               for v in postgres["volumes"]), "the index lives in a named volume"
    for node in ORTHANC_NODES:
        service = services[node]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "secrets" not in service, "no key in the base setup: it is generated in the storage volume"
    images = {services[n]["image"] for n in ORTHANC_NODES}
    assert len(images) == 1, "both nodes run the same image"
    mounts = [sorted(services[n]["volumes"]) for n in ORTHANC_NODES]
    assert mounts[0] == mounts[1], "both nodes mount the same storage"
    [storage] = mounts[0]
    volume, target = storage.split(":")[:2]
    assert volume in compose["volumes"], "storage is a named volume, shared"
    assert target == "/var/lib/orthanc/db"


@pytest.mark.parametrize("env", [{}, {"POSTGRES_PASSWORD": "s3cret-Password"}])
def test_nodes_share_the_postgresql_index_and_the_storage(image, env):
    _, written = image
    services = load_compose(COMPOSE, env=env)["services"]
    pg = environment(services["postgres"])
    names = set()
    for node in ORTHANC_NODES:
        config = node_configuration(written, services[node])
        assert config["PostgreSQL"] == {
            "Host": "postgres", "Port": 5432, "Database": pg["POSTGRES_DB"], "Username": pg["POSTGRES_USER"],
            "Password": pg["POSTGRES_PASSWORD"], "EnableIndex": True, "EnableStorage": False,
            "Lock": False,  # several Orthancs on one database
        }
        if env:
            assert config["PostgreSQL"]["Password"] == env["POSTGRES_PASSWORD"]
        [storage] = services[node]["volumes"]
        assert config["StorageDirectory"] == storage.split(":")[1]
        assert config["RemoteAccessAllowed"] is True  # clients come through Docker's network
        assert config["AuthenticationEnabled"] is False  # as `make run`: published on 127.0.0.1 only
        names.add(config["Name"])
    assert len(names) == len(ORTHANC_NODES)


def test_nodes_run_the_plugin_configuration_of_orthanc_json_with_a_generated_key(image):
    _, written = image
    services = load_compose(COMPOSE)["services"]
    for node in ORTHANC_NODES:
        config = node_configuration(written, services[node])
        assert config["ConsistentAnonymization"] == orthanc_json()["ConsistentAnonymization"]
        assert config["PythonScript"] == written["PythonScript"]
        parsed = parse_config(config)
        assert parsed.key is None, "no key configured: generated once and kept in the storage volume"


def test_keyfile_variant_reads_the_key_from_a_docker_secret(image, tmp_path):
    _, written = image
    compose = load_compose(COMPOSE, COMPOSE_KEYFILE)
    [(secret, definition)] = compose["secrets"].items()
    # The image's entrypoint reads /run/secrets/*.json and /run/secrets/ORTHANC__* into the
    # configuration: the key file must be neither, so that only the plugin reads it.
    assert not secret.endswith(".json") and not secret.startswith("ORTHANC__")
    key_file = (DOCKER / definition["file"]).resolve()
    assert key_file.parent == DOCKER
    ignored = subprocess.run(["git", "check-ignore", "-q", str(key_file)], cwd=REPO)
    assert ignored.returncode == 0, f"{key_file.name} must be git-ignored"
    key = "k" * 40
    (tmp_path / secret).write_text(key + "\n")
    for node in ORTHANC_NODES:
        service = compose["services"][node]
        assert service["secrets"] == [secret]
        config = node_configuration(written, service)
        section = config["ConsistentAnonymization"]
        assert section == {**orthanc_json()["ConsistentAnonymization"], "KeyFile": f"/run/secrets/{secret}"}
        # The plugin reads that file (here: a stand-in for /run/secrets/).
        section["KeyFile"] = str(tmp_path / secret)
        assert parse_config(config).key == key.encode()
        assert loopback_only(service)


def test_readme_documents_every_variable():
    text = README.read_text()
    variables = set()
    for path in (COMPOSE, COMPOSE_KEYFILE):
        raw = path.read_text()
        variables |= set(re.findall(r"\$\{([A-Za-z_]\w*)", raw))
        variables |= set(re.findall(r"^\s*((?:ORTHANC__|POSTGRES_)\w+):", raw, re.MULTILINE))
    for _, arguments in [s for s in dockerfile_steps() if s[0] == "ENV"]:
        variables.add(re.split(r"[= ]", arguments)[0])
    assert variables
    missing = sorted(v for v in variables if v not in text)
    assert not missing, f"docker/README.md does not mention {missing}"
    assert "orthancteam/orthanc:" + next(a for i, a in dockerfile_steps() if i == "FROM").split(":")[1] in text


def test_the_image_runs_the_newest_orthanc_the_suite_runs():
    """docker/README.md names the Dockerfile's tag with its Orthanc version, and that version is the
    newest of the supported versions docs/deployment.md lists (the one the tests check last)."""
    tag = next(a for i, a in dockerfile_steps() if i == "FROM").split()[0].split(":")[1]
    stated = re.search(r"`orthancteam/orthanc:" + re.escape(tag) + r"` \(Orthanc (\d+)\.(\d+)\.(\d+)\)", README.read_text())
    assert stated, f"docker/README.md does not give the Orthanc version of {tag}"
    deployment = (Path(__file__).parents[1] / "docs" / "deployment.md").read_text()
    section = deployment.split("## Supported Orthanc versions", 1)[1].split("\n## ", 1)[0]
    supported = [tuple(map(int, v)) for v in re.findall(r"^\| (\d+)\.(\d+)\.(\d+) \|", section, re.MULTILINE)]
    assert supported and tuple(map(int, stated.groups())) == max(supported)
