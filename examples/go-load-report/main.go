// Command load-report tells the control plane how busy this process is (docs/load-aware.md,
// "Reporting load from an application"): every period, its CPU and memory utilization in [0, 1] for its
// endpoint, over the report API of protos/xds/load/v1/load.proto. Stubs: loadv1/ (see README.md here).
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"runtime"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"example.com/loadreport/loadv1"
)

// cpuSeconds is the CPU time this process has used, user plus system.
func cpuSeconds() float64 {
	var usage syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &usage)
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano()).Seconds()
}

// memoryUtilization is the memory the Go runtime holds from the OS over the machine's RAM.
func memoryUtilization() float64 {
	var info syscall.Sysinfo_t
	_ = syscall.Sysinfo(&info)
	var stats runtime.MemStats
	runtime.ReadMemStats(&stats)
	return min(1, float64(stats.Sys)/float64(uint64(info.Totalram)*uint64(info.Unit)))
}

func main() {
	target := flag.String("control-plane", "127.0.0.1:18002", "the control plane's --load-report-address")
	endpoint := flag.String("address", "", "this instance's endpoint, host:port exactly as the catalog has it")
	every := flag.Float64("every", 5, "seconds between reports")
	once := flag.Bool("once", false, "send one report, then exit: 0 if it was accepted, 1 if not")
	flag.Parse()
	conn, err := grpc.NewClient(*target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatalf("control plane %s: %v", *target, err)
	}
	client := loadv1.NewLoadReportingClient(conn)
	lastCPU, lastWall := cpuSeconds(), time.Now()
	for {
		time.Sleep(time.Duration(*every * float64(time.Second)))
		cpu, wall := cpuSeconds(), time.Now()
		// CPU utilization: CPU seconds used per wall second, over every core of the machine.
		busy := min(1, (cpu-lastCPU)/wall.Sub(lastWall).Seconds()/float64(runtime.NumCPU()))
		lastCPU, lastWall = cpu, wall
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		reply, err := client.Report(ctx, &loadv1.LoadReport{
			Address: *endpoint, CpuUtilization: busy, MemoryUtilization: memoryUtilization()})
		cancel()
		if err != nil {
			log.Printf("report failed: %v", err) // the control plane may be restarting: try next period
		} else {
			log.Printf("cpu %.3f: accepted %d, rejected %d %s", busy, reply.Accepted, reply.Rejected, reply.LastRejection)
		}
		if *once {
			if err != nil || reply.Accepted != 1 {
				os.Exit(1)
			}
			return
		}
	}
}
