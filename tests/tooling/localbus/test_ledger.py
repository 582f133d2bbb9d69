"""The ledger's verdicts: what counts as lost, duplicated or unexplained, from plain values."""

from __future__ import annotations

from localbus.ledger import QUEUE, WEBHOOK, Ending, Reconciliation, Sent, _letter_event_ids


def reconciliation(endings: dict[tuple[str, str], Ending], *sent: Sent) -> Reconciliation:
    return Reconciliation("unit", list(sent), endings, stray_letters=0, waited_s=0.0)


def test_every_accepted_event_ended_once_is_no_problem():
    sent = Sent("e1", [503, 202], [0.1, 0.2])
    result = reconciliation(
        {("e1", QUEUE): Ending(delivered=1), ("e1", WEBHOOK): Ending(dead_letters=["refused"])}, sent
    )
    assert result.problems() == []
    assert (result.delivered(QUEUE), result.dead_lettered(WEBHOOK)) == (1, 1)


def test_lost_duplicated_and_reasonless_are_each_a_problem():
    accepted = [Sent(f"e{n}", [202], [0.1]) for n in range(3)]
    endings = {
        ("e0", QUEUE): Ending(),  # lost
        ("e0", WEBHOOK): Ending(delivered=2),  # duplicated
        ("e1", QUEUE): Ending(dead_letters=[""]),  # dead-lettered without a reason
        ("e1", WEBHOOK): Ending(delivered=1),
        ("e2", QUEUE): Ending(delivered=1),
        ("e2", WEBHOOK): Ending(delivered=1, dead_letters=["late"]),  # delivered and dead-lettered: twice
    }
    result = reconciliation(endings, *accepted)
    assert result.lost == [("e0", QUEUE)]
    assert sorted(result.duplicated) == [("e0", WEBHOOK), ("e2", WEBHOOK)]
    assert result.reasonless == [("e1", QUEUE)]
    assert len(result.problems()) == 3


def test_an_event_never_acknowledged_is_the_clients_to_retry_not_lost():
    refused = Sent("e9", [503, 503], [1.0, 1.0])
    result = reconciliation({("e9", QUEUE): Ending(), ("e9", WEBHOOK): Ending()}, refused)
    assert result.lost == []
    assert result.server_errors == 0, "503 is the documented answer to retry"


def test_a_500_is_a_problem():
    result = reconciliation(
        {("e1", QUEUE): Ending(delivered=1), ("e1", WEBHOOK): Ending(delivered=1)}, Sent("e1", [500, 202], [0.1, 0.1])
    )
    assert result.problems() == ["1 answers were 5xx other than 503"]


def test_letters_name_their_events_by_event_or_by_the_records_ce_id_header():
    consumer_letter = {"event": {"id": "e1"}, "subscription": QUEUE, "reason": "refused"}
    trigger_letter = {"payload": {"records": {"orders-0": [{"headers": [{"ce_id": list(b"e2")}]}]}}}
    assert _letter_event_ids(consumer_letter) == {"e1"}
    assert _letter_event_ids(trigger_letter) == {"e2"}
