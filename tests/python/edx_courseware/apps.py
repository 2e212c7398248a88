"""The app that holds the models, under edx-platform's app label `courseware`."""

from django.apps import AppConfig


class CoursewareConfig(AppConfig):
    name = "edx_courseware"
    label = "courseware"
    default_auto_field = "django.db.models.AutoField"
