// A proxyless grpc-go client for the end-to-end tests of issue 11 (tests/e2e/test_proxyless_grpc_e2e.py).
//
// It dials the xds:/// target given as its argument, with the bootstrap named by GRPC_XDS_BOOTSTRAP
// (`xds bootstrap --grpc`), and speaks the same line protocol as harness/grpc_named.py: for each line N on
// stdin it makes N calls of /xds.test.Who/Name, whose answer is the name of the server that took the call,
// and prints the counts by name as one JSON line ("errors:<CODE>" for failed calls).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	_ "google.golang.org/grpc/xds" // registers the xds resolver and balancers
)

const whoMethod = "/xds.test.Who/Name"

// rawCodec passes bytes through: the test servers take and answer raw bytes, not protobuf messages.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "raw" }

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		// What harness/testbin.py checks after a build: the grpc-go version the wrapper pins.
		fmt.Println("grpc-xds-client grpc-go", grpc.Version)
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: grpc-xds-client xds:///<listener>")
		os.Exit(2)
	}
	conn, err := grpc.NewClient(os.Args[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		calls, err := strconv.Atoi(strings.TrimSpace(lines.Text()))
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad count:", err)
			os.Exit(2)
		}
		counts := map[string]int{}
		for i := 0; i < calls; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			request, reply := []byte{}, []byte{}
			err := conn.Invoke(ctx, whoMethod, &request, &reply, grpc.ForceCodec(rawCodec{}), grpc.WaitForReady(true))
			cancel()
			if err != nil {
				counts["errors:"+status.Code(err).String()]++
			} else {
				counts[string(reply)]++
			}
		}
		out, _ := json.Marshal(counts)
		fmt.Println(string(out))
	}
}
