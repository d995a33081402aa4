package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// epoch is the origin of the generator's clock. Durations since it come from
// the monotonic clock, so publisher and subscriber stamps (both taken in this
// process) compare exactly whatever the wall clock does.
var epoch = time.Now()

// now is the generator's clock.
func now() time.Duration { return time.Since(epoch) }

// stampSize is the head of every benchmark payload: the message's sequence
// number on its topic, then the time it was published on the generator's
// clock, both big-endian. The rest of the payload is padding.
const stampSize = 16

// putStamp writes the stamp at the start of p, which must hold stampSize bytes.
func putStamp(p []byte, seq uint64, sent time.Duration) {
	binary.BigEndian.PutUint64(p, seq)
	binary.BigEndian.PutUint64(p[8:], uint64(sent))
}

// readStamp reads the stamp putStamp wrote; ok is false for a payload too
// short to hold one (a message not of this run).
func readStamp(p []byte) (seq uint64, sent time.Duration, ok bool) {
	if len(p) < stampSize {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(p), time.Duration(binary.BigEndian.Uint64(p[8:])), true
}

// subBits sets the histogram's precision: 2^subBits buckets per power of
// two, so a bucket is at most 1/32 of its values wide and a quantile (the
// bucket's midpoint) is within 1/64 of the true value.
const subBits = 5

// histogram counts non-negative durations (in nanoseconds) in log-linear
// buckets, the layout of HdrHistogram. Its zero value is empty; it is not
// safe for concurrent use (each goroutine keeps its own and they are merged).
type histogram struct {
	counts [(65 - subBits) << subBits]uint64
	total  uint64
}

// bucketOf is the index of v's bucket. Buckets are contiguous: values below
// 2^(subBits+1) map to themselves, and each later power of two [2^k, 2^(k+1))
// takes 2^subBits buckets of width 2^(k-subBits).
func bucketOf(v uint64) int {
	if v < 2<<subBits {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	return (shift+1)<<subBits + int(v>>shift) - 1<<subBits
}

// bucketRange is the lowest value of bucket i and the bucket's width.
func bucketRange(i int) (low, width uint64) {
	if i < 2<<subBits {
		return uint64(i), 1
	}
	shift := i>>subBits - 1
	mantissa := uint64(i&(1<<subBits-1) + 1<<subBits)
	return mantissa << shift, 1 << shift
}

// record counts d; a negative d (impossible on one monotonic clock) counts
// as zero.
func (h *histogram) record(d time.Duration) {
	h.counts[bucketOf(uint64(max(d, 0)))]++
	h.total++
}

func (h *histogram) merge(o *histogram) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.total += o.total
}

// quantile is the value below or at which a fraction q of the recorded
// values lie (nearest rank, the bucket's midpoint); 0 when empty.
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, n := range h.counts {
		seen += n
		if seen >= rank {
			low, width := bucketRange(i)
			return time.Duration(low + width/2)
		}
	}
	panic("unreachable: total is the sum of the counts")
}

// cpuTime is the CPU (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat: USER_HZ, which the
// kernel fixes at 100 for user space on every Linux architecture.
const userHZ = 100

// processCPU is the CPU (user and system) process pid has used.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime (fields 14 and 15) of a /proc/<pid>/stat
// line. The command name (field 2) is in parentheses and may itself hold
// spaces and parentheses, so fields are counted from the last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	// After ')' come field 3 (state) onwards.
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: cpu time %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / userHZ), nil
}

// processRSS is the resident set size of process pid in bytes.
func processRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(string(b))
}

// parseVmRSS reads the VmRSS line ("VmRSS:	  123456 kB") of /proc/<pid>/status.
func parseVmRSS(status string) (int64, error) {
	for line := range strings.Lines(status) {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("status: VmRSS line %q", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status: VmRSS %q: %w", f[0], err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("status: no VmRSS line (a kernel thread or a zombie?)")
}
