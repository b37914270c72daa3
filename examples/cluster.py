"""A four-worker cluster on the standard library, grown from the original README's example.

The original showed the idea in five lines::

    info = pickle.dumps(sense.networkInfo())
    code = "import distributedFramework; distributedFramework.contactMaster(%s)" % info
    sense.launchWorkers(2, "medium", startupCode=code)

Here the master listens on its project address, launches workers whose
startup code (with ``env`` saying where the master is) connects back and
says hello, hands each a share of the work, collects the results, and then
shrinks the cluster back to itself with ``stopWorkers()``.

Run it with::

    sense run examples/cluster.py
"""

import json
import os
import socket

import sense

WORKERS = 4
NUMBERS = 1_000_000  # the job: the sum of the squares of 0 .. NUMBERS-1

# Each worker says hello, then answers every task the master sends until it is stopped.
WORKER_CODE = """
import json, os, socket, sense

master = (os.environ["MASTER_HOST"], int(os.environ["MASTER_PORT"]))
me = {"id": int(os.environ["SENSE_DASHBOARD_ID"]), "project_ip": sense.networkInfo()["project_ip"]}
with socket.create_connection(master, timeout=30) as connection:
    stream = connection.makefile("rw")
    stream.write(json.dumps(me) + "\\n")
    stream.flush()
    print("said hello to the master at %s:%s" % master)
    for line in stream:
        start, stop = json.loads(line)
        stream.write(json.dumps(sum(i * i for i in range(start, stop))) + "\\n")
        stream.flush()
        print("summed the squares of %d .. %d" % (start, stop - 1))
"""


def main() -> None:
    here = sense.networkInfo()["project_ip"]
    with socket.create_server((here, 0)) as server:
        server.settimeout(60)
        host, port = server.getsockname()
        print(f"master {os.environ['SENSE_DASHBOARD_ID']} listens on {host}:{port}")
        workers = sense.launchWorkers(
            WORKERS,
            "small",
            startupCode=WORKER_CODE,
            env={"MASTER_HOST": host, "MASTER_PORT": str(port)},
        )
        print("launched workers", [worker["id"] for worker in workers])

        streams = []
        for _ in workers:
            connection, _address = server.accept()
            stream = connection.makefile("rw")
            hello = json.loads(stream.readline())
            print(f"worker {hello['id']} says hello from {hello['project_ip']}")
            streams.append(stream)

        share = NUMBERS // len(streams)
        for i, stream in enumerate(streams):
            stop = NUMBERS if i == len(streams) - 1 else (i + 1) * share
            stream.write(json.dumps([i * share, stop]) + "\n")
            stream.flush()
        total = sum(json.loads(stream.readline()) for stream in streams)
        assert total == sum(i * i for i in range(NUMBERS))
        print(f"the cluster summed the squares below {NUMBERS}: {total}")

        print("cluster:", [dashboard["id"] for dashboard in sense.getWorkers()])
        sense.stopWorkers()
        print("after stopWorkers():", [dashboard["id"] for dashboard in sense.getWorkers()])


if __name__ == "__main__":
    main()
