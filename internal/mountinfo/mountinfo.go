// Package mountinfo reads a process's mounts from /proc/<pid>/mountinfo.
package mountinfo

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// Path is this process's mountinfo.
const Path = "/proc/self/mountinfo"

// Mount is one line of mountinfo.
type Mount struct {
	Device string // major:minor of the filesystem
	Root   string // the filesystem's directory mounted here
	Point  string // where, in this process's view
	FSType string
}

// Read reads the mounts of a mountinfo file.
func Read(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() //nolint:errcheck // read only: closing loses nothing
	var out []Mount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) && len(fields) > 4 {
				out = append(out, Mount{Device: fields[2], Root: unescape(fields[3]), Point: unescape(fields[4]), FSType: fields[i+1]})
				break
			}
		}
	}
	return out, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
