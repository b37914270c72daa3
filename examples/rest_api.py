"""The REST API from a dashboard: the original README's example, made to run.

The original called ``getAuth()`` unqualified, used an undefined ``auth``,
and imported neither ``os`` nor ``requests``. This is what it meant::

    sense run examples/rest_api.py
"""

import os

import requests

import sense

auth = sense.getAuth()
api = os.environ.get("SENSE_API_URL", "https://api.senseplatform.com")
url = api + "/users/" + os.environ["SENSE_OWNER_ID"] + "/projects/" + os.environ["SENSE_PROJECT_ID"]

project = requests.get(url, auth=(auth["user"], auth["pass"]), timeout=30).json()
print("project:", project["id"], "of", project["owner_id"])

dashboards = requests.get(url + "/dashboards", auth=(auth["user"], auth["pass"]), timeout=30).json()
for dashboard in dashboards:
    print(f"dashboard {dashboard['id']}: {dashboard['status']}")
