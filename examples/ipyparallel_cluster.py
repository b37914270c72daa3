"""ipyparallel on sense workers: four engines, each a worker dashboard.

``engines="sense"`` (an engine launcher that sense registers with ipyparallel)
starts each engine as a worker dashboard of this master; the controller listens
on this dashboard's project address, where the engines reach it.

Run it with::

    pip install '.[local,ipyparallel]'
    sense run examples/ipyparallel_cluster.py
"""

import ipyparallel as ipp

import sense


def worker_ids() -> list[int]:
    return [dashboard["id"] for dashboard in sense.getWorkers() if dashboard["master_id"]]


def dashboard_id() -> int:
    import os  # runs on an engine, whose namespace has imported nothing yet

    return int(os.environ["SENSE_DASHBOARD_ID"])


def main() -> None:
    here = sense.networkInfo()["project_ip"]
    cluster = ipp.Cluster(engines="sense", n=4, controller_ip=here)
    with cluster as rc:  # starts the controller and the engines, and stops both at the end
        print("engines:", rc.ids, "on worker dashboards", worker_ids())
        dashboards = rc[:].apply_sync(dashboard_id)
        print("each engine runs in its dashboard:", sorted(dashboards) == worker_ids())
        print("the sum of 100 squares:", sum(rc[:].map_sync(lambda x: x * x, range(100))))
        cluster.stop_engines_sync()
        print("after stop_engines, worker dashboards:", worker_ids())


if __name__ == "__main__":
    main()
