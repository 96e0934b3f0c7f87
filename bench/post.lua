-- wrk script: POST a small JSON reading to /ingest on keep-alive connections.
wrk.method = "POST"
wrk.path = "/ingest"
wrk.body = '{"device_id":"sensor-001","temperature_c":21.5,"humidity":48.2}'
wrk.headers["Content-Type"] = "application/json"
