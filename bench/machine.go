package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// machine describes where the figures were measured.
type machine struct {
	CPU        string
	Cores      int
	Memory     string
	Go         string
	Kernel     string
	GOMAXPROCS int
	LoadStart  string // /proc/loadavg when the run started
	LoadEnd    string // and when it ended
}

// loadavg returns the 1, 5 and 15 minute load averages: other work on the
// machine during a run shows up here and explains noisy figures.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func describeMachine() machine {
	m := machine{CPU: "unknown", Memory: "unknown", Kernel: "unknown", Cores: runtime.NumCPU(), Go: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0), LoadStart: loadavg()}
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		m.CPU = v
	}
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		if kb, err := strconv.ParseFloat(strings.Fields(v)[0], 64); err == nil {
			m.Memory = fmt.Sprintf("%.1f GiB", kb/(1<<20))
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	return m
}

// procField returns the value of the first "key: value" line of a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// procStatusKB returns a "VmRSS"-style field of /proc/<pid>/status in KiB.
func procStatusKB(pid string, key string) (float64, error) {
	v := procField("/proc/"+pid+"/status", key)
	if v == "" {
		return 0, fmt.Errorf("bench: /proc/%s/status has no %s", pid, key)
	}
	return strconv.ParseFloat(strings.Fields(v)[0], 64)
}
