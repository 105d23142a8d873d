// Package workload names what a cgroup v2 path says of the workload in it:
// the container and the Kubernetes pod, as the container runtimes and the
// kubelet's cgroup drivers lay their cgroups out.
package workload

import (
	"regexp"
	"strings"
)

// Workload is what a cgroup path names.
type Workload struct {
	ContainerID string // 64 hex digits, or "" outside a container
	Runtime     string // containerd, cri-o, docker, podman; "" when the path does not say
	PodUID      string // the Kubernetes pod's UID, or ""
}

// The last component that names a container, as each runtime writes it:
// a systemd scope with the runtime's prefix (the systemd cgroup driver),
// or the bare id (the cgroupfs driver: /kubepods/burstable/pod<uid>/<id>,
// /docker/<id>).
var containerScope = regexp.MustCompile(`^(?:(cri-containerd|crio|docker|libpod|cri-dockerd)-)?([0-9a-f]{64})(?:\.scope)?$`)

var runtimes = map[string]string{
	"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker", "libpod": "podman", "cri-dockerd": "docker",
}

// The pod's component: pod<uid> (cgroupfs driver, UID with dashes) or
// kubepods-<qos>-pod<uid>.slice (systemd driver, dashes escaped as
// underscores).
var podComponent = regexp.MustCompile(`(?:^|-)pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$`)

// Parse reads a cgroup path (as /proc/<pid>/cgroup or the cgroup2 tree
// writes it, from its root).
func Parse(path string) Workload {
	var w Workload
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		part := parts[i]
		if w.ContainerID == "" && w.PodUID == "" {
			if m := containerScope.FindStringSubmatch(part); m != nil {
				w.ContainerID, w.Runtime = m[2], runtimes[m[1]]
				continue
			}
		}
		if m := podComponent.FindStringSubmatch(part); m != nil {
			w.PodUID = strings.ReplaceAll(m[1], "_", "-")
			break
		}
	}
	return w
}
