"""Create the two roles as groups: Viewers read; Operators also add, refresh, label and archive scans."""

from django.db import migrations

VIEW = ["view_scan", "view_statuschange", "view_refreshrun"]
OPERATE = ["operate_scans"]


def create_roles(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations; the groups need them now.
    app_config = apps.get_app_config("scans")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    scans_permissions = Permission.objects.filter(content_type__app_label="scans")
    viewers, _ = Group.objects.get_or_create(name="Viewers")
    viewers.permissions.add(*scans_permissions.filter(codename__in=VIEW))
    operators, _ = Group.objects.get_or_create(name="Operators")
    operators.permissions.add(*scans_permissions.filter(codename__in=VIEW + OPERATE))


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["Viewers", "Operators"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("scans", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
