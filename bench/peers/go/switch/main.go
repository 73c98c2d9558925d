// SPDX-License-Identifier: MIT
// switch: the Go peer of bench/switch.c.
//
//	-mode chan   ping-pong over two unbuffered channels, -n round trips
//	             (2n hops; one hop = one switch)
//	-mode yield  two goroutines calling runtime.Gosched() n times each
//	             (2n yields); only meaningful with GOMAXPROCS=1
//
// Prints one JSON line with ns per switch.
package main

import (
	"encoding/json"
	"flag"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	n := flag.Int("n", 2000000, "round trips (chan) or yields per goroutine (yield)")
	mode := flag.String("mode", "chan", "chan or yield")
	flag.Parse()

	var wg sync.WaitGroup
	wg.Add(2)
	start := time.Now()
	switch *mode {
	case "chan":
		ping := make(chan int)
		pong := make(chan int)
		go func() {
			defer wg.Done()
			for i := 0; i < *n; i++ {
				ping <- i
				<-pong
			}
		}()
		go func() {
			defer wg.Done()
			for i := 0; i < *n; i++ {
				v := <-ping
				pong <- v
			}
		}()
	case "yield":
		for k := 0; k < 2; k++ {
			go func() {
				defer wg.Done()
				for i := 0; i < *n; i++ {
					runtime.Gosched()
				}
			}()
		}
	default:
		os.Stderr.WriteString("switch: unknown -mode\n")
		os.Exit(2)
	}
	wg.Wait()
	el := time.Since(start)
	ops := 2 * *n
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"bench": "switch", "impl": "go", "mode": *mode, "n": *n, "ops": ops,
		"gomaxprocs": runtime.GOMAXPROCS(0),
		"vmhwm_kib":  vmhwmKiB(),
		"elapsed_s":  el.Seconds(),
		"ns_per_op":  float64(el.Nanoseconds()) / float64(ops),
	})
}

// vmhwmKiB: peak RSS of this process since exec (VmHWM from /proc/self/status).
// run.py prefers it to wait4's ru_maxrss, which also counts the forking parent.
func vmhwmKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, ln := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(ln, "VmHWM:") {
			f := strings.Fields(ln)
			if len(f) >= 2 {
				v, err := strconv.ParseInt(f[1], 10, 64)
				if err == nil {
					return v
				}
			}
		}
	}
	return -1
}
