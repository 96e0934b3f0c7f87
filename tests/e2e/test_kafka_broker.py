"""The Kafka broker harness (kafka_broker.py) gives the end-to-end tests a real broker: topics are
created by Kafka's own tool, messages produced with kcat (acks=all) are read back by kcat, and
they survive a SIGKILL of the broker and its restart on the same port."""
import signal
import subprocess

import pytest

from kafka_broker import KCAT, KafkaBroker, can_connect


def produce(broker, topic, lines):
    """Produces one message per line with kcat, acks=all, and waits for every acknowledgement."""
    r = subprocess.run([KCAT, "-b", broker.bootstrap, "-P", "-t", topic, "-X", "acks=all",
                        "-X", "enable.idempotence=true"],
                       input="".join(line + "\n" for line in lines), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def read_all(broker, topic):
    """Every message of `topic`, from the beginning to the current end, read with kcat."""
    r = subprocess.run([KCAT, "-b", broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e",
                        "-q", "-f", "%s\n"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_messages_survive_a_kill_and_a_restart_on_the_same_port(own_kafka):
    own_kafka.create_topic("e2e.kafka", partitions=3)
    md = own_kafka.metadata("e2e.kafka")
    assert [len(t["partitions"]) for t in md["topics"]] == [3]

    messages = [f"reading-{i}" for i in range(20)]
    produce(own_kafka, "e2e.kafka", messages)
    assert sorted(read_all(own_kafka, "e2e.kafka")) == sorted(messages)

    bootstrap, old_pid = own_kafka.bootstrap, own_kafka.pid
    own_kafka.kill()
    assert own_kafka.pid is None
    assert not can_connect(own_kafka.port)

    own_kafka.restart()
    assert own_kafka.bootstrap == bootstrap
    assert own_kafka.pid not in (None, old_pid)
    assert sorted(read_all(own_kafka, "e2e.kafka")) == sorted(messages)
    # ...and it takes new messages after the restart.
    produce(own_kafka, "e2e.kafka", ["after-restart"])
    assert sorted(read_all(own_kafka, "e2e.kafka")) == sorted(messages + ["after-restart"])


def test_stop_is_graceful_and_keeps_the_topics(own_kafka):
    own_kafka.create_topic("kept", partitions=1)
    produce(own_kafka, "kept", ["one"])
    own_kafka.stop()
    # The JVM ran its shutdown hooks and exited with 128 + SIGTERM; the SIGKILL fallback would
    # show as -SIGKILL.
    assert own_kafka.proc.returncode == 128 + signal.SIGTERM
    own_kafka.restart()
    assert read_all(own_kafka, "kept") == ["one"]


def test_the_shared_broker_serves_topics_of_each_test(kafka):
    kafka.create_topic("shared.one", partitions=2)
    produce(kafka, "shared.one", ["a", "b"])
    assert sorted(read_all(kafka, "shared.one")) == ["a", "b"]


def test_missing_jars_fail_naming_the_build_script(tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_LIBS", str(tmp_path / "no-such-libs"))
    with pytest.raises(pytest.fail.Exception, match=r"scripts/kafka\.sh build"):
        KafkaBroker(tmp_path / "kafka").start()
