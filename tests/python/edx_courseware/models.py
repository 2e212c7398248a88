"""edx-platform's `StudentModule` and `StudentModuleHistory` (lms/djangoapps/courseware/models.py), with the
fields, table names, indexes and signal that decide the SQL Django sends for them; `User` stands in for
`django.contrib.auth`'s model (only the columns the fixture's `auth_user` has).

History is written as edx-platform writes it: a post_save receiver on StudentModule adds one history row per save
of a `problem` module. Newer edx-platform keeps the history row of the current request in a request cache and, when
the same module is saved again in that request, updates that row instead of adding another: `get(id=...)`, then
`save()`, which Django sends as an UPDATE by id. `REQUEST_CACHE` plays that cache; `begin_request()` empties it.
"""

from django.db import models
from django.db.models.signals import post_save
from django.dispatch import receiver

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
    cached = REQUEST_CACHE.get(instance.id)
    if cached is not None:
        entry = StudentModuleHistory.objects.get(id=cached)
    else:
        entry = StudentModuleHistory(student_module=instance, version=None)
    entry.created = instance.modified
    entry.state = instance.state
    entry.grade = instance.grade
    entry.max_grade = instance.max_grade
    entry.save()
    if cached is None:
        REQUEST_CACHE[instance.id] = entry.id
        WRITTEN.append(entry.id)
