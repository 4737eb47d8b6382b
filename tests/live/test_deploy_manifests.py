"""deploy/: the Kubernetes manifests and the container image against Kubernetes' schemas, against
each other, and against the running app.

- Rendered with `kubectl kustomize` (the base and every overlay) and validated offline with
  kubernetes-validate against Kubernetes' own schemas, strictly (an unknown field is an error), for
  the oldest version the manifests need (1.30: the preStop sleep action) and the newest it knows.
- Not in those schemas: the ServiceMonitor (a Prometheus-operator CRD) and the Prometheus adapter's
  rule (values of its Helm chart). They are checked here field by field against what they must
  point at: the Service's labels and port name, /metrics, the HorizontalPodAutoscaler's metric.
- Against the app: the settings file and arguments of the rendered pod are loaded by app.py's own
  code, and a live `python app.py` started with them answers every path the probes, the
  ServiceMonitor and the Ingress name, exposes the metric the autoscaler follows, reads the Secret's
  variables, and accepts the Ingress's Host name.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import kubernetes_validate
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from webui import settings as app_settings
from support.liveserver import ROOT, LiveServer

KUBERNETES = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = [KUBERNETES / "base", *sorted(path for path in (KUBERNETES / "overlays").iterdir() if path.is_dir())]
GPU_OVERLAY = KUBERNETES / "overlays" / "one-gpu-per-pod"
SHARED_GPU_OVERLAY = KUBERNETES / "overlays" / "two-pods-per-gpu"
TIME_SLICING = SHARED_GPU_OVERLAY / "device-plugin-time-slicing.yaml"
ADAPTER_VALUES = KUBERNETES / "prometheus-adapter" / "values.yaml"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
OLDEST_KUBERNETES = "1.30"  # lifecycle.preStop.sleep is on by default from 1.30
CRDS = {"monitoring.coreos.com/v1": {"ServiceMonitor"}}
CONFIG_MOUNT = "/etc/lama"


def render(kustomization: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise AssertionError("kubectl not found: the manifests are rendered with `kubectl kustomize`")
    result = subprocess.run([kubectl, "kustomize", str(kustomization)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class Rendered:
    """One rendered kustomization, by kind (and name)."""

    def __init__(self, docs: list[dict]):
        self.docs = docs

    def all(self, kind: str) -> list[dict]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict:
        found = [doc for doc in self.all(kind) if name is None or doc["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} named {name}"
        return found[0]

    @property
    def pod(self) -> dict:
        return self.one("Deployment")["spec"]["template"]

    @property
    def container(self) -> dict:
        (container,) = self.pod["spec"]["containers"]
        return container

    def config_file(self) -> str:
        """The settings file the container reads (the ConfigMap mounted at /etc/lama)."""
        volume = next(mount["name"] for mount in self.container["volumeMounts"] if mount["mountPath"] == CONFIG_MOUNT)
        config_map = next(v["configMap"]["name"] for v in self.pod["spec"]["volumes"] if v["name"] == volume)
        return self.one("ConfigMap", config_map)["data"]["lama.yaml"]

    def app_args(self, config_path: Path) -> list[str]:
        """The container's arguments to app.py (the image's entry point, start_app.sh, passes them
        on), with the settings file where this machine has it."""
        args = list(self.container["args"])
        return [str(config_path) if arg.startswith(CONFIG_MOUNT + "/") else arg for arg in args]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=lambda path: path.name)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(render(request.param))


def pod_settings(rendered: Rendered, folder: Path) -> app_settings.Settings:
    config = folder / "lama.yaml"
    config.write_text(rendered.config_file())
    return app_settings.load_settings(app_settings.parse_args(rendered.app_args(config)))


# ------------------------------------------------------------------ schemas


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, kubernetes_validate.latest_version()])
def test_every_manifest_validates_against_the_kubernetes_schemas(rendered: Rendered, version: str):
    kinds = {doc["kind"] for doc in rendered.docs}
    assert kinds >= {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                     "ServiceMonitor", "PersistentVolumeClaim", "ConfigMap"}
    for doc in rendered.docs:
        if doc["kind"] in CRDS.get(doc["apiVersion"], ()):
            continue  # not in Kubernetes' schemas: test_the_servicemonitor_and_the_autoscaler_find_their_targets
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']} against Kubernetes {version}: "
                                 f"{error.message} at {'.'.join(map(str, error.path))}") from None


# ------------------------------------------------------------------ the objects point at each other


def test_services_ingress_and_budget_select_the_pods_and_their_port(rendered: Rendered):
    pod_labels = rendered.pod["metadata"]["labels"]
    port_names = {port["name"] for port in rendered.container["ports"]}
    services = {service["metadata"]["name"]: service for service in rendered.all("Service")}
    for service in services.values():
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    budget = rendered.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    assert budget.items() <= pod_labels.items()
    backends = {}
    for rule in rendered.one("Ingress")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["port"]["name"] in {port["name"] for port in services[backend["name"]]["spec"]["ports"]}
            backends[path["path"]] = services[backend["name"]]
    # Cookie stickiness for the UI only: the API's Service balances by least connections.
    api, ui = backends["/api/"]["metadata"]["annotations"], backends["/"]["metadata"]["annotations"]
    assert "haproxy.org/cookie-persistence" in ui and "haproxy.org/cookie-persistence" not in api
    assert api["haproxy.org/load-balance"] == "leastconn"


def test_the_servicemonitor_and_the_autoscaler_find_their_targets(rendered: Rendered):
    monitor = rendered.one("ServiceMonitor")
    selected = [service for service in rendered.all("Service")
                if monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()]
    assert len(selected) == 1, "each pod is scraped once: through exactly one Service"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in selected[0]["spec"]["ports"]}

    hpa = rendered.one("HorizontalPodAutoscaler")
    deployment = rendered.one("Deployment")
    assert (hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"]) == (
        "Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    (rule,) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    assert rule["name"]["as"] == name
    assert re.match(rf"{name}\{{", rule["seriesQuery"])  # the adapter serves the app's own series
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}  # a per-pod metric, as type Pods needs


def test_the_grace_period_covers_the_prestop_wait_and_the_drain(rendered: Rendered, tmp_path: Path):
    settings = pod_settings(rendered, tmp_path)
    pre_stop = rendered.container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = rendered.pod["spec"]["terminationGracePeriodSeconds"]
    # app.py drains for at most shutdown_timeout_s, then gives uvicorn what is left, at least 1 s.
    needed = pre_stop + settings.shutdown_timeout_s + 1
    assert needed <= grace <= needed + 10, (f"terminationGracePeriodSeconds {grace}: preStop {pre_stop} s + "
                                             f"shutdown_timeout_s {settings.shutdown_timeout_s} s + 1 s needed")


def test_the_pod_settings_are_app_settings_and_match_the_manifests(rendered: Rendered, tmp_path: Path):
    settings = pod_settings(rendered, tmp_path)  # app.py's own loader: unknown keys or bad values fail here
    (port,) = rendered.container["ports"]
    assert settings.port == port["containerPort"]
    assert settings.host == "0.0.0.0"
    hosts = {rule["host"] for rule in rendered.one("Ingress")["spec"]["rules"]}
    assert hosts <= set(settings.allowed_hosts), "the pods would answer the Ingress's Host with 421"
    mounts = {mount["mountPath"]: mount for mount in rendered.container["volumeMounts"]}
    workdir = Path("/app")  # the image's WORKDIR: relative settings are relative to it
    for folder in (settings.outputs_dir, settings.logs_dir, settings.ui_cache_dir, settings.kernel_cache_dir):
        assert str(workdir / folder) in mounts and not mounts[str(workdir / folder)].get("readOnly"), folder
    shared = {mount["name"] for mount in rendered.container["volumeMounts"]
              if mount["mountPath"] == str(workdir / settings.outputs_dir)}
    claims = {volume["name"]: volume["persistentVolumeClaim"]["claimName"]
              for volume in rendered.pod["spec"]["volumes"] if "persistentVolumeClaim" in volume}
    # The kernels a pod compiles are there for the next one (a restart, a new replica): a claim,
    # not the pod's own emptyDir.
    assert mounts[str(workdir / settings.kernel_cache_dir)]["name"] in claims
    (outputs_claim,) = [rendered.one("PersistentVolumeClaim", claims[name]) for name in shared]
    assert outputs_claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every replica answers for every job


def test_the_gpu_overlay_gives_each_pod_one_gpu_and_insists_on_it(tmp_path: Path):
    rendered = Rendered(render(GPU_OVERLAY))
    assert rendered.container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod_settings(rendered, tmp_path).device == "cuda"


def test_two_pods_share_a_gpu_within_what_one_pod_would_hold(tmp_path: Path):
    """The device plugin announces each GPU as `replicas` GPUs; the pods on one GPU together keep
    within the memory share one pod of one-gpu-per-pod takes, and the autoscaler may run
    `replicas` pods for each GPU the one-GPU overlay allows."""
    (sharing,) = yaml.safe_load(yaml.safe_load(TIME_SLICING.read_text())["data"]["any"])["sharing"]["timeSlicing"][
        "resources"]
    assert sharing["name"] == "nvidia.com/gpu" and sharing["replicas"] >= 2
    shared, alone = Rendered(render(SHARED_GPU_OVERLAY)), Rendered(render(GPU_OVERLAY))
    (tmp_path / "shared").mkdir()
    (tmp_path / "alone").mkdir()
    shared_settings, alone_settings = pod_settings(shared, tmp_path / "shared"), pod_settings(alone, tmp_path / "alone")
    assert shared.container["resources"]["limits"]["nvidia.com/gpu"] == 1 and shared_settings.device == "cuda"
    assert shared_settings.gpu_memory_fraction * sharing["replicas"] <= alone_settings.gpu_memory_fraction + 1e-9
    assert shared.one("HorizontalPodAutoscaler")["spec"]["maxReplicas"] == \
        sharing["replicas"] * alone.one("HorizontalPodAutoscaler")["spec"]["maxReplicas"]


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, kubernetes_validate.latest_version()])
def test_the_device_plugin_s_sharing_config_validates(version: str):
    kubernetes_validate.validate(yaml.safe_load(TIME_SLICING.read_text()), version, strict=True)


def test_the_image_declares_what_the_pods_use():
    instructions = [line.split(None, 1) for line in CONTAINERFILE.read_text().replace("\\\n", " ").splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    image = {}
    for keyword, rest in instructions:
        image.setdefault(keyword, []).append(rest.strip())
    rendered = Rendered(render(GPU_OVERLAY))
    pod_port = rendered.container["ports"][0]["containerPort"]
    assert image["EXPOSE"] == [str(pod_port)]
    assert image["WORKDIR"] == ["/app"]
    (user,) = [run for run in image["RUN"] if "useradd" in run]
    assert re.search(r"--uid (\d+)", user).group(1) == str(rendered.pod["spec"]["securityContext"]["runAsUser"])
    volumes = yaml.safe_load(image["VOLUME"][0])
    assert set(volumes) <= {mount["mountPath"] for mount in rendered.container["volumeMounts"]}
    assert f"127.0.0.1:{pod_port}/livez" in image["HEALTHCHECK"][0]
    assert "./start_app.sh --install" in image["RUN"]  # one install script: start_app.sh's
    assert image["ENTRYPOINT"] == ['["./start_app.sh"]']


# ------------------------------------------------------------------ against the running app


@pytest.fixture(scope="module")
def pod_like_server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Rendered]]:
    """app.py with the GPU overlay's settings file and arguments (less --device: no GPU here) and
    the Secret's variables. LiveServer's --host 127.0.0.1, --port and folders are flags, which
    outrank the settings file: the pod's 0.0.0.0:7860 and /app cannot be assumed here."""
    rendered = Rendered(render(GPU_OVERLAY))
    folder = tmp_path_factory.mktemp("pod")
    config = folder / "lama.yaml"
    config.write_text(rendered.config_file())
    args = rendered.app_args(config)
    device_at = args.index("--device")
    del args[device_at:device_at + 2]
    secrets = {ref["valueFrom"]["secretKeyRef"]["key"]: ref["name"] for ref in rendered.container["env"]
               if "valueFrom" in ref}
    env = {secrets["api-token"]: "token-from-the-secret", secrets["auth"]: "user:pass-from-the-secret"}
    with LiveServer.start(tiny_dir, folder, *args, env=env) as server:
        yield server, rendered


def test_every_path_port_and_metric_the_manifests_name_exists_in_the_running_app(pod_like_server):
    server, rendered = pod_like_server
    probes = [rendered.container[probe]["httpGet"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")]
    for probe in probes:
        assert probe["port"] in {port["name"] for port in rendered.container["ports"]}
        assert httpx.get(server.url(probe["path"])).status_code == 200, probe["path"]
    (endpoint,) = rendered.one("ServiceMonitor")["spec"]["endpoints"]
    scraped = httpx.get(server.url(endpoint["path"]))
    assert scraped.status_code == 200
    families = {family.name for family in text_string_to_metric_families(scraped.text)}
    (metric,) = rendered.one("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] in families

    (rule,) = rendered.one("Ingress")["spec"]["rules"]
    host = {"Host": rule["host"]}
    paths = {path["path"] for path in rule["http"]["paths"]}
    assert paths == {"/", "/api/"}
    page = httpx.get(server.url("/"), headers=host)
    assert page.status_code == 200 and "<html" in page.text.lower()  # the UI, behind its login
    image = cv2.imencode(".png", np.full((48, 64, 3), 128, np.uint8))[1].tobytes()
    mask = np.zeros((48, 64), np.uint8)
    mask[10:20, 10:30] = 255
    files = {"image": ("i.png", image, "image/png"), "mask": ("m.png", cv2.imencode(".png", mask)[1].tobytes(),
                                                             "image/png")}
    # The Secret's api-token is the app's API token ...
    assert httpx.post(server.url("/api/v1/inpaint"), files=files, headers=host).status_code == 401
    repaired = httpx.post(server.url("/api/v1/inpaint"), files=files, timeout=60,
                          headers={**host, "Authorization": "Bearer token-from-the-secret"})
    assert repaired.status_code == 200 and repaired.headers["content-type"] == "image/png"
    # ... and its auth the UI's login.
    login = httpx.post(server.url("/login"), data={"username": "user", "password": "pass-from-the-secret"},
                       headers=host)
    assert login.status_code == 200, login.text
