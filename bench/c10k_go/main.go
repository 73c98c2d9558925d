// SPDX-License-Identifier: MIT
// c10k_go: the Go peer of the C10K echo server for bench/io_run.py: one
// goroutine per connection, echoing what it reads.
//
//	c10k_go -port 9000
package main

import (
	"flag"
	"fmt"
	"net"
)

func main() {
	port := flag.Int("port", 9000, "port")
	flag.Parse()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		panic(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go func(c net.Conn) {
			defer c.Close()
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		}(c)
	}
}
