"""edx-platform's `StudentModule` and `StudentModuleHistory` (lms/djangoapps/courseware/models.py), with the
fields, table names, indexes and signal that decide the SQL Django sends for them; `User` stands in for
`django.contrib.auth`'s model (only the columns the fixture's `auth_user` has).

History is written as edx-platform writes it (`BaseStudentModuleHistory.save_history_entry`): a post_save receiver
on StudentModule adds one history row per save of a `problem` module. Newer edx-platform keeps the history row of the
current request in a request cache and, when the same module is saved again in that request, updates that row instead
of adding another: `get(id=...)`, then `save()`, which Django sends as an UPDATE by id. When that `get` finds nothing,
edx-platform logs "Cached StudentModuleHistory instance does not exist" at ERROR on the `edx.courseware` logger and
adds a new row; either way the cache then holds the id of the row just saved. `REQUEST_CACHE` plays that cache;
`begin_request()` empties it.

The history model's `id` is edx-platform's: left to the app's default, a 32-bit `AutoField`. The setting
`HISTORY_ID_FIELD` declares it instead, as a site that changed edx-platform's model would: `"BigAutoField"` (Django's
64-bit field) or `"UnsignedBigIntAutoField"` (edx-platform's field of the extended model, see below).
"""

import logging

from django.conf import settings
from django.db import models
from django.db.models.signals import post_save
from django.dispatch import receiver

log = logging.getLogger("edx.courseware")

# Module id -> id of the history row written for it in the current request.
REQUEST_CACHE = {}

# Ids of every history row the receiver wrote, in order.
WRITTEN = []


def begin_request():
    """Forgets the previous request's history rows, as edx-platform's request cache does between requests."""
    REQUEST_CACHE.clear()


class User(models.Model):
    """`auth_user`, as far as the fixture creates it."""

    username = models.CharField(max_length=150, unique=True)

    class Meta:
        app_label = "courseware"
        db_table = "auth_user"
        managed = False


class StudentModule(models.Model):
    """One learner's state of one XBlock (`courseware_studentmodule`)."""

    id = models.BigAutoField(primary_key=True)
    module_type = models.CharField(max_length=32, default="problem", db_index=True)
    module_state_key = models.CharField(max_length=255, db_column="module_id")
    student = models.ForeignKey(User, db_index=True, db_constraint=False, on_delete=models.CASCADE)
    course_id = models.CharField(max_length=255, db_index=True)
    state = models.TextField(null=True, blank=True)
    grade = models.FloatField(null=True, blank=True, db_index=True)
    max_grade = models.FloatField(null=True, blank=True)
    done = models.CharField(max_length=8, default="na")
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    modified = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        app_label = "courseware"
        db_table = "courseware_studentmodule"
        unique_together = (("student", "module_state_key", "course_id"),)


class UnsignedBigIntAutoField(models.AutoField):
    """edx-platform's id field of `StudentModule` and of the extended history model
    (lms/djangoapps/courseware/fields.py): an `AutoField` whose MySQL column is `bigint unsigned`. Its internal type
    stays `AutoField`, so Django checks lookups on it against the 32-bit range."""

    def db_type(self, connection):
        return "bigint UNSIGNED AUTO_INCREMENT"

    def rel_db_type(self, connection):
        return "bigint UNSIGNED"


# The fields `HISTORY_ID_FIELD` may name.
HISTORY_ID_FIELDS = {"BigAutoField": models.BigAutoField, "UnsignedBigIntAutoField": UnsignedBigIntAutoField}


class BaseStudentModuleHistory(models.Model):
    """The fields both history tables share, in edx-platform's order."""

    HISTORY_SAVING_TYPES = {"problem"}

    version = models.CharField(max_length=255, null=True, blank=True, db_index=True)
    # Populated from StudentModule.modified.
    created = models.DateTimeField(db_index=True)
    state = models.TextField(null=True, blank=True)
    grade = models.FloatField(null=True, blank=True)
    max_grade = models.FloatField(null=True, blank=True)

    class Meta:
        abstract = True


class StudentModuleHistory(BaseStudentModuleHistory):
    """`courseware_studentmodulehistory`: one row per saved state of a problem."""

    if getattr(settings, "HISTORY_ID_FIELD", None):
        id = HISTORY_ID_FIELDS[settings.HISTORY_ID_FIELD](primary_key=True)
    student_module = models.ForeignKey(StudentModule, db_index=True, db_constraint=False, on_delete=models.CASCADE)

    class Meta:
        app_label = "courseware"
        db_table = "courseware_studentmodulehistory"
        get_latest_by = "created"


@receiver(post_save, sender=StudentModule)
def save_history(sender, instance, **kwargs):  # pylint: disable=unused-argument
    """A history row for each save of a problem's state; the second save in one request updates the first's."""
    if instance.module_type not in StudentModuleHistory.HISTORY_SAVING_TYPES:
        return
    entry = None
    cached = REQUEST_CACHE.get(instance.id)
    if cached is not None:
        try:
            entry = StudentModuleHistory.objects.get(id=cached)
        except StudentModuleHistory.DoesNotExist:
            log.error(
                "Cached StudentModuleHistory instance does not exist: StudentModuleHistory(%s) for StudentModule(%s)",
                cached,
                instance.id,
            )
    if entry is None:
        entry = StudentModuleHistory(student_module=instance, version=None)
    entry.created = instance.modified
    entry.state = instance.state
    entry.grade = instance.grade
    entry.max_grade = instance.max_grade
    new = entry.pk is None
    entry.save()
    REQUEST_CACHE[instance.id] = entry.id
    if new:
        WRITTEN.append(entry.id)
