// SPDX-License-Identifier: MIT
// delay_server: the "slow upstream" of the fetch benchmark (bench/http_run.py).
// Every request is answered after -delay-ms milliseconds with a small body,
// over HTTP/1.1 keep-alive. It runs with GOMAXPROCS=1 (one core): Go's netpoller
// parks each delayed handler on a timer, so 100 (or 1,000) concurrent delayed
// responses cost it a few microseconds of CPU each, far below what the clients
// under test spend — the server is never the bottleneck (bench/README.md shows
// its CPU time per request next to the clients').
//
//	delay_server -delay-ms 50 -size 512
//
// Prints "listening 127.0.0.1:PORT" on stdout once it accepts connections
// (-port 0, the default, picks a free port). Stops on SIGTERM/SIGINT.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"time"
)

func main() {
	port := flag.Int("port", 0, "port (0: any free one)")
	delayMs := flag.Int("delay-ms", 50, "delay before each response, in ms")
	size := flag.Int("size", 512, "response body size in bytes")
	flag.Parse()
	runtime.GOMAXPROCS(1)

	body := bytes.Repeat([]byte("x"), *size)
	if *size > 0 {
		body[len(body)-1] = '\n'
	}
	delay := time.Duration(*delayMs) * time.Millisecond
	clen := strconv.Itoa(len(body))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", clen)
		w.Write(body)
	})
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "delay_server:", err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", ln.Addr().String())
	os.Stdout.Sync()
	srv := &http.Server{Handler: h, IdleTimeout: 60 * time.Second}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "delay_server:", err)
		os.Exit(1)
	}
}
