"""Pod Security Standards, "restricted" profile (which includes "baseline"), as an offline check
of pod templates. It follows the rules of the Kubernetes Pod Security Standards page
(kubernetes.io/docs/concepts/security/pod-security-standards/, policy version "latest" as of
Kubernetes 1.37) and the admission controller's checks (k8s.io/pod-security-admission/policy).
Each rule below names the control it implements. Fields are read as the API server would see
them: a container-level securityContext overrides the pod-level one where the standard says so.

    violations(pod_spec, pod_metadata) -> list of "control: message" strings (empty = allowed)

Not covered (they cannot be decided from a manifest alone): Windows-only pods (spec.os.name
windows relaxes some restricted rules; we run Linux pods, so such a pod is reported).
"""

# Baseline: capabilities that may be added (restricted narrows this to NET_BIND_SERVICE).
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
# Baseline: "safe" sysctls (the union up to policy version 1.32).
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
# Baseline: SELinux types a pod may ask for.
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# Restricted: the only volume types allowed.
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}
VOLUME_META_KEYS = {"name"}


def _containers(spec):
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or []:
            yield field, c


def violations(spec, metadata=None):
    metadata = metadata or {}
    out = []
    psc = spec.get("securityContext") or {}
    containers = list(_containers(spec))

    def each(fn):
        for field, c in containers:
            fn(f"{field}[{c.get('name', '?')}]", c, c.get("securityContext") or {})

    # --- baseline -----------------------------------------------------------------------------
    # HostProcess: Windows HostProcess containers are forbidden.
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("hostProcess: pod securityContext.windowsOptions.hostProcess must not be true")
    each(lambda n, c, sc: (sc.get("windowsOptions") or {}).get("hostProcess")
         and out.append(f"hostProcess: {n} windowsOptions.hostProcess must not be true"))
    # Host namespaces: hostNetwork, hostPID, hostIPC must be unset or false.
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            out.append(f"host namespaces: spec.{field} must not be true")
    # Privileged containers.
    each(lambda n, c, sc: sc.get("privileged")
         and out.append(f"privileged: {n} securityContext.privileged must not be true"))
    # Capabilities (baseline): additions only from the baseline list.
    def caps_baseline(n, c, sc):
        for cap in (sc.get("capabilities") or {}).get("add") or []:
            if cap not in BASELINE_CAPABILITIES:
                out.append(f"capabilities: {n} adds {cap}, not allowed by baseline")
    each(caps_baseline)
    # HostPath volumes.
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            out.append(f"hostPath volumes: volume {v.get('name')} is a hostPath")
    # Host ports: unset or 0.
    def host_ports(n, c, sc):
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                out.append(f"host ports: {n} uses hostPort {p['hostPort']}")
    each(host_ports)
    # AppArmor: unset, RuntimeDefault or Localhost (field and legacy annotations).
    def apparmor_ok(profile):
        return not profile or profile.get("type") in ("RuntimeDefault", "Localhost")
    if not apparmor_ok(psc.get("appArmorProfile")):
        out.append("AppArmor: pod appArmorProfile.type must be RuntimeDefault or Localhost")
    each(lambda n, c, sc: not apparmor_ok(sc.get("appArmorProfile"))
         and out.append(f"AppArmor: {n} appArmorProfile.type must be RuntimeDefault or Localhost"))
    for key, value in (metadata.get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/"):
            if value != "runtime/default" and not value.startswith("localhost/"):
                out.append(f"AppArmor: annotation {key}={value} is not allowed")
    # SELinux: type from the allowed set; user and role unset.
    def selinux_ok(opts, where):
        if not opts:
            return
        if opts.get("type", "") not in SELINUX_TYPES:
            out.append(f"SELinux: {where} seLinuxOptions.type {opts.get('type')} not allowed")
        for f in ("user", "role"):
            if opts.get(f):
                out.append(f"SELinux: {where} seLinuxOptions.{f} must be unset")
    selinux_ok(psc.get("seLinuxOptions"), "pod")
    each(lambda n, c, sc: selinux_ok(sc.get("seLinuxOptions"), n))
    # /proc mount type: unset or Default.
    each(lambda n, c, sc: sc.get("procMount") not in (None, "Default")
         and out.append(f"/proc mount: {n} procMount must be Default"))
    # Seccomp (baseline): never Unconfined.
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("seccomp: pod seccompProfile must not be Unconfined")
    # Sysctls: only the safe set.
    for s in psc.get("sysctls") or []:
        if s.get("name") not in SAFE_SYSCTLS:
            out.append(f"sysctls: {s.get('name')} is not a safe sysctl")

    # --- restricted ---------------------------------------------------------------------------
    # Volume types: only the restricted set.
    for v in spec.get("volumes") or []:
        kinds = set(v) - VOLUME_META_KEYS
        bad = kinds - RESTRICTED_VOLUME_TYPES
        if bad or not kinds:
            out.append(f"volume types: volume {v.get('name')} uses {sorted(bad or kinds)}")
    # Privilege escalation: allowPrivilegeEscalation must be false in every container.
    each(lambda n, c, sc: sc.get("allowPrivilegeEscalation") is not False
         and out.append(f"privilege escalation: {n} must set allowPrivilegeEscalation: false"))
    # Running as non-root: pod runAsNonRoot true, or every container true; none false.
    pod_nonroot = psc.get("runAsNonRoot")
    def nonroot(n, c, sc):
        value = sc.get("runAsNonRoot", pod_nonroot)
        if value is not True:
            out.append(f"running as non-root: {n} must run with runAsNonRoot: true")
    each(nonroot)
    # Running as non-root user: runAsUser never 0.
    if psc.get("runAsUser") == 0:
        out.append("running as non-root user: pod runAsUser must not be 0")
    each(lambda n, c, sc: sc.get("runAsUser") == 0
         and out.append(f"running as non-root user: {n} runAsUser must not be 0"))
    # Seccomp (restricted): RuntimeDefault or Localhost, at pod level or in every container.
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    def seccomp(n, c, sc):
        value = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if value not in ("RuntimeDefault", "Localhost"):
            out.append(f"seccomp: {n} needs seccompProfile RuntimeDefault or Localhost")
    each(seccomp)
    # Capabilities (restricted): drop ALL; add at most NET_BIND_SERVICE.
    def caps_restricted(n, c, sc):
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"capabilities: {n} must drop ALL")
        for cap in caps.get("add") or []:
            if cap != "NET_BIND_SERVICE":
                out.append(f"capabilities: {n} may add only NET_BIND_SERVICE, not {cap}")
    each(caps_restricted)
    if (spec.get("os") or {}).get("name") == "windows":
        out.append("os: Windows pods are not checked by this script")
    return out


POD_TEMPLATE_PATHS = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def pod_template(obj):
    """(metadata, spec) of the pod an object runs, or None for objects that run no pod."""
    path = POD_TEMPLATE_PATHS.get(obj.get("kind"))
    if path is None:
        return None
    node = obj
    for key in path:
        node = (node or {}).get(key) or {}
    return node.get("metadata") or {}, node.get("spec") or {}
