"""Recurring tasks in the sandbox, each rule replayed with unmodified exchangelib over HTTP.

The sources, cited in full in sandbox/task_series.py: Microsoft Learn "CreateItem operation
(task)" (Comments: how a new recurrence places the task), "UpdateItem operation (task)"
("Updating the Current Occurrence of a Recurring Task": completing splits off a one-off task),
[MS-OXOTASK] 3.1.4.6.2 (new instance dates), [MS-OXORMDR] 3.1.4.8 (reminders of generated
instances), the DailyRegeneration element reference and the ResponseCode reference.
"""

from __future__ import annotations

import datetime as dt

import pytest
from dateutil.relativedelta import relativedelta
from exchangelib import CalendarItem, EWSDate, EWSDateTime, EWSTimeZone, Task
from exchangelib.errors import (
    ErrorCalendarOutOfRange,
    ErrorRecurrenceHasNoOccurrence,
    ErrorSchemaValidation,
)
from exchangelib.fields import LAST, WEEK_DAY
from exchangelib.recurrence import (
    DailyRegeneration,
    MonthlyRegeneration,
    Recurrence,
    RelativeMonthlyPattern,
    TaskRecurrence,
    WeeklyPattern,
    WeeklyRegeneration,
    YearlyRegeneration,
)

from tsl_exchange_plugin.sandbox.testing import SANDBOX_PASSWORDS, exchangelib_account

BERLIN = EWSTimeZone("Europe/Berlin")


@pytest.fixture
def acc(sandbox):
    return exchangelib_account(sandbox, sorted(SANDBOX_PASSWORDS)[0])


def weekly_task(acc, **extra) -> Task:
    """Every Monday, three times, created on a Wednesday with two days to do it."""
    task = Task(
        account=acc,
        folder=acc.tasks,
        subject="Wiedervorlage Akte 17/26",
        start_date=EWSDate(2026, 3, 4),
        due_date=EWSDate(2026, 3, 6),
        recurrence=TaskRecurrence(
            pattern=WeeklyPattern(interval=1, weekdays=[1]), start=EWSDate(2026, 3, 4), number=3
        ),
        **extra,
    )
    task.save()
    return task


def fetch(acc, item_id) -> Task:
    return acc.tasks.get(id=item_id)


def test_a_recurring_task_starts_on_its_first_date_and_reads_back_as_exchangelib_parses_it(acc):
    task = weekly_task(acc)
    got = fetch(acc, task.id)
    # CreateItem operation (task): the range's StartDate moves to the first Monday (4 March 2026
    # is a Wednesday), the task's StartDate to that date, its DueDate keeps the two days.
    assert (got.start_date, got.due_date) == (EWSDate(2026, 3, 9), EWSDate(2026, 3, 11))
    assert got.is_recurring is True
    assert isinstance(got.recurrence, TaskRecurrence)
    assert got.recurrence.pattern == WeeklyPattern(interval=1, weekdays=[1], first_day_of_week=1)
    # The range dates come back as dates ("2026-03-09+01:00"), as exchangelib parses task ranges.
    assert type(got.recurrence.boundary.start) is EWSDate
    assert (got.recurrence.boundary.start, got.recurrence.boundary.number) == (EWSDate(2026, 3, 9), 3)


def test_a_task_without_start_date_gets_its_due_date_from_the_pattern(acc):
    # "The last weekday of every month", from 1 March 2026: Tuesday 31 March.
    task = Task(
        account=acc,
        folder=acc.tasks,
        subject="Monatsabschluss Fremdgeld",
        due_date=EWSDate(2026, 3, 1),
        recurrence=TaskRecurrence(
            pattern=RelativeMonthlyPattern(interval=1, weekday=WEEK_DAY, week_number=LAST),
            start=EWSDate(2026, 3, 1),
        ),
    )
    task.save()
    got = fetch(acc, task.id)
    assert (got.start_date, got.due_date) == (None, EWSDate(2026, 3, 31))
    # Completing it: the next instance is the last weekday of April (Thursday the 30th); 31 May
    # is a Sunday, so May's is Friday the 29th.
    got.complete()
    nxt = fetch(acc, task.id)
    assert (nxt.due_date, nxt.status) == (EWSDate(2026, 4, 30), "NotStarted")
    nxt.complete()
    assert fetch(acc, task.id).due_date == EWSDate(2026, 5, 29)


def test_completing_a_recurring_task_splits_off_a_completed_copy_until_the_last(acc):
    reminder = EWSDateTime(2026, 3, 11, 8, 0, tzinfo=BERLIN)
    task = weekly_task(acc, reminder_is_set=True, reminder_due_by=reminder)
    series_id = task.id
    task = fetch(acc, series_id)
    task.complete()
    # UpdateItem operation (task): the answer names a new one-off task; exchangelib takes its Id.
    assert task.id != series_id
    done = fetch(acc, task.id)
    assert (done.status, done.percent_complete, done.is_complete) == ("Completed", 100, True)
    assert (done.start_date, done.due_date) == (EWSDate(2026, 3, 9), EWSDate(2026, 3, 11))
    assert done.recurrence is None and done.is_recurring is False
    assert done.reminder_is_set is False  # [MS-OXORMDR] 3.1.4.8: the completed instance's is off
    # The Id sent stays valid: the recurring task now stands for the next Monday.
    nxt = fetch(acc, series_id)
    assert (nxt.status, nxt.percent_complete, nxt.complete_date) == ("NotStarted", 0, None)
    assert (nxt.start_date, nxt.due_date) == (EWSDate(2026, 3, 16), EWSDate(2026, 3, 18))
    assert nxt.is_recurring is True and nxt.recurrence.boundary.number == 3
    # Its reminder moves with the due date, a week later at the same time.
    assert nxt.reminder_is_set is True
    assert nxt.reminder_due_by == reminder + dt.timedelta(days=7)
    assert nxt.subject == done.subject == "Wiedervorlage Akte 17/26"

    nxt.complete()
    assert nxt.id != series_id
    third = fetch(acc, series_id)
    assert (third.start_date, third.due_date) == (EWSDate(2026, 3, 23), EWSDate(2026, 3, 25))
    # The third of three is the last: completing it answers with the same Id.
    third.complete()
    assert third.id == series_id
    last = fetch(acc, series_id)
    assert (last.status, last.start_date) == ("Completed", EWSDate(2026, 3, 23))
    everything = sorted((t.start_date, t.status) for t in acc.tasks.all())
    assert everything == [
        (EWSDate(2026, 3, 9), "Completed"),
        (EWSDate(2026, 3, 16), "Completed"),
        (EWSDate(2026, 3, 23), "Completed"),
    ]


@pytest.mark.parametrize(
    ("pattern", "step"),
    [
        (DailyRegeneration(interval=3), relativedelta(days=3)),
        (WeeklyRegeneration(interval=2), relativedelta(weeks=2)),
        (MonthlyRegeneration(interval=1), relativedelta(months=1)),
        (YearlyRegeneration(interval=1), relativedelta(years=1)),
    ],
    ids=["daily", "weekly", "monthly", "yearly"],
)
def test_a_regenerating_task_comes_back_an_interval_after_its_completion(acc, pattern, step):
    task = Task(
        account=acc,
        folder=acc.tasks,
        subject="Fristenbuch prüfen",
        start_date=EWSDate(2026, 3, 2),
        due_date=EWSDate(2026, 3, 4),
        recurrence=TaskRecurrence(pattern=pattern, start=EWSDate(2026, 3, 2), number=2),
    )
    task.save()
    series_id = task.id
    got = fetch(acc, series_id)
    assert got.is_recurring is True and type(got.recurrence.pattern) is type(pattern)
    assert got.recurrence.pattern.interval == pattern.interval
    got.complete()
    assert got.id != series_id
    done = fetch(acc, got.id)
    assert done.status == "Completed" and done.complete_date is not None
    # [MS-OXOTASK] 3.1.4.6.2: a sliding pattern counts from the day the task was completed; the
    # new due date keeps the old distance of two days to the start.
    local = done.complete_date.astimezone(BERLIN)
    completed_on = dt.date(local.year, local.month, local.day)  # plain date, for relativedelta
    nxt = fetch(acc, series_id)
    assert nxt.start_date == completed_on + step
    assert nxt.due_date == completed_on + step + relativedelta(days=2)
    assert nxt.status == "NotStarted"
    # Two occurrences: the second completion is the last, on the task itself.
    nxt.complete()
    assert nxt.id == series_id
    assert fetch(acc, series_id).status == "Completed"
    assert acc.tasks.all().count() == 2


def test_moving_a_fixed_instance_splits_it_off_but_a_regenerating_one_moves_in_place(acc):
    task = fetch(acc, weekly_task(acc).id)
    series_id = task.id
    # UpdateItem operation (task): changing the due date of a non-regenerating recurring task
    # generates a one-off task with the change; the recurring task goes on with the next Monday.
    task.due_date = EWSDate(2026, 3, 13)
    task.save(update_fields=["due_date"])
    assert task.id != series_id
    moved = fetch(acc, task.id)
    assert (moved.start_date, moved.due_date, moved.status) == (
        EWSDate(2026, 3, 9),
        EWSDate(2026, 3, 13),
        "NotStarted",
    )
    assert moved.recurrence is None
    nxt = fetch(acc, series_id)
    assert (nxt.start_date, nxt.due_date) == (EWSDate(2026, 3, 16), EWSDate(2026, 3, 18))

    regen = Task(
        account=acc,
        folder=acc.tasks,
        subject="Aktenablage",
        due_date=EWSDate(2026, 3, 4),
        recurrence=TaskRecurrence(pattern=DailyRegeneration(interval=7), start=EWSDate(2026, 3, 4)),
    )
    regen.save()
    regen_id = regen.id
    regen.due_date = EWSDate(2026, 3, 6)
    regen.save(update_fields=["due_date"])
    assert regen.id == regen_id
    assert fetch(acc, regen_id).due_date == EWSDate(2026, 3, 6)
    assert acc.tasks.all().count() == 3


def test_invalid_task_recurrences_are_refused_as_exchange_refuses_them(acc):
    # DailyRegeneration element reference: the Interval "must be in the range of 1 to 999";
    # ResponseCode reference: ErrorCalendarOutOfRange for "task recurrence properties when the
    # property value is out of range".
    too_far = Task(
        account=acc,
        folder=acc.tasks,
        subject="Zu weit",
        due_date=EWSDate(2026, 3, 2),
        recurrence=TaskRecurrence(pattern=DailyRegeneration(interval=1000), start=EWSDate(2026, 3, 2)),
    )
    with pytest.raises(ErrorCalendarOutOfRange):
        too_far.save()
    # ErrorRecurrenceHasNoOccurrence: Sundays between a Monday and a Friday.
    never = Task(
        account=acc,
        folder=acc.tasks,
        subject="Nie",
        due_date=EWSDate(2026, 3, 2),
        recurrence=TaskRecurrence(
            pattern=WeeklyPattern(interval=1, weekdays=[7]),
            start=EWSDate(2026, 3, 2),
            end=EWSDate(2026, 3, 6),
        ),
    )
    with pytest.raises(ErrorRecurrenceHasNoOccurrence):
        never.save()
    assert acc.tasks.all().count() == 0
    # A regenerating pattern belongs to tasks only (TaskRecurrenceType); in a calendar item's
    # RecurrenceType it fails schema validation.
    appointment = CalendarItem(
        account=acc,
        folder=acc.calendar,
        subject="Regeneriert",
        start=EWSDateTime(2026, 3, 2, 9, tzinfo=BERLIN),
        end=EWSDateTime(2026, 3, 2, 10, tzinfo=BERLIN),
        recurrence=Recurrence(pattern=DailyRegeneration(interval=3), start=EWSDate(2026, 3, 2)),
    )
    with pytest.raises(ErrorSchemaValidation):
        appointment.save()
    assert acc.calendar.all().count() == 0
