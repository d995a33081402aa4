package kvstore

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// memoryLimit is the memory this process may use: its cgroup's limit
// (v2 memory.max, else v1 limit_in_bytes) when one is set below the
// machine's memory, else the machine's memory (MemTotal), else 4 GiB when
// neither can be read.
func memoryLimit() int64 {
	total := memTotal()
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64) // "max" fails: no limit
		if err == nil && n > 0 && (total == 0 || n < total) {
			return n
		}
	}
	if total > 0 {
		return total
	}
	return 4 << 30
}

func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}
