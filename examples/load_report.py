"""Tell the control plane how busy this process is (docs/load-aware.md, "Reporting load from an application").

    python examples/load_report.py --control-plane 127.0.0.1:18002 --address 10.0.0.7:8080 [--every 5]
                                   [--once]

Every period it sends this process's CPU and memory utilization, in [0, 1], for its endpoint `--address`
("host:port" exactly as the catalog has it) to the report API of protos/xds/load/v1/load.proto. The stubs
come with the control plane's package (`xds.load.v1`); `grpc_tools.protoc` makes the same from the proto.
"""

import argparse
import os
import time

import grpc

from xds.load.v1 import load_pb2, load_pb2_grpc


def memory_utilization() -> float:
    """This process's resident memory over the machine's RAM (Linux: /proc/self/statm, in pages)."""
    with open("/proc/self/statm") as statm:
        resident = int(statm.read().split()[1])
    return resident / os.sysconf("SC_PHYS_PAGES")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--control-plane", default="127.0.0.1:18002", help="its --load-report-address")
    parser.add_argument("--address", required=True, help="this instance's endpoint, host:port")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between reports")
    parser.add_argument("--once", action="store_true", help="one report; exit 0 only if it was accepted")
    args = parser.parse_args()
    stub = load_pb2_grpc.LoadReportingStub(grpc.insecure_channel(args.control_plane))
    last_cpu, last_wall = time.process_time(), time.monotonic()
    while True:
        time.sleep(args.every)
        cpu, wall = time.process_time(), time.monotonic()
        # CPU seconds this process used per wall second, over every core of the machine.
        busy = min(1.0, (cpu - last_cpu) / (wall - last_wall) / (os.cpu_count() or 1))
        last_cpu, last_wall = cpu, wall
        try:
            reply = stub.Report(load_pb2.LoadReport(address=args.address, cpu_utilization=busy,
                                                    memory_utilization=memory_utilization()), timeout=2.0)
            print(f"cpu {busy:.3f}: accepted {reply.accepted}, rejected {reply.rejected}",
                  reply.last_rejection)
        except grpc.RpcError as e:  # the control plane may be restarting: try again next period
            print(f"report failed: {e.code().name}")
            reply = None
        if args.once:
            return 0 if reply is not None and reply.accepted == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
