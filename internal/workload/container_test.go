package workload

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

const (
	id  = "7b3c5d2e9f8a1b4c6d0e2f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c3d5e7f9a1b3c"
	uid = "0f8c2b6e-3d4a-4b5c-9e1f-2a3b4c5d6e7f"
)

// Path shapes as the runtimes and the kubelet's two cgroup drivers write
// them.
func TestParse(t *testing.T) {
	tests := []struct {
		name, path string
		want       Workload
	}{
		{"kubelet systemd driver, containerd",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f8c2b6e_3d4a_4b5c_9e1f_2a3b4c5d6e7f.slice/cri-containerd-" + id + ".scope",
			Workload{ContainerID: id, Runtime: "containerd", PodUID: uid}},
		{"kubelet systemd driver, CRI-O, guaranteed QoS",
			"/kubepods.slice/kubepods-pod0f8c2b6e_3d4a_4b5c_9e1f_2a3b4c5d6e7f.slice/crio-" + id + ".scope",
			Workload{ContainerID: id, Runtime: "cri-o", PodUID: uid}},
		{"CRI-O's conmon is not the container",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f8c2b6e_3d4a_4b5c_9e1f_2a3b4c5d6e7f.slice/crio-conmon-" + id + ".scope",
			Workload{PodUID: uid}},
		{"kubelet cgroupfs driver",
			"/kubepods/burstable/pod" + uid + "/" + id,
			Workload{ContainerID: id, PodUID: uid}},
		{"kubelet cgroupfs driver, a pod's own cgroup",
			"/kubepods/besteffort/pod" + uid,
			Workload{PodUID: uid}},
		{"docker, systemd driver", "/system.slice/docker-" + id + ".scope", Workload{ContainerID: id, Runtime: "docker"}},
		{"docker, cgroupfs driver", "/docker/" + id, Workload{ContainerID: id}},
		{"podman, rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id + ".scope",
			Workload{ContainerID: id, Runtime: "podman"}},
		{"a process inside a container's own sub-cgroup",
			"/system.slice/docker-" + id + ".scope/init.scope", Workload{ContainerID: id, Runtime: "docker"}},
		{"a systemd service", "/system.slice/sshd.service", Workload{}},
		{"a user session", "/user.slice/user-1000.slice/session-3.scope", Workload{}},
		{"the root", "/", Workload{}},
		{"a 63-digit id is none", "/docker/" + id[1:], Workload{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, Parse(tt.path))
		})
	}
}
