"""Start the nodes: record the flight into a dataset, render the model's view of the current pose and, with a
localizer checkpoint, localize the camera images (image -> pose with covariance).

ros2 launch pose2rgbd pose2rgbd.launch.py checkpoint:=/path/model.pt dataset:=/data/flight02 \
    localize_checkpoint:=/path/localizer.pt covariance_file:=/path/calib.yaml
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("pose2rgbd")
    args = [
        DeclareLaunchArgument("checkpoint", description="model checkpoint (.pt) for the render node"),
        DeclareLaunchArgument("dataset", default_value="", description="dataset directory for the record node"),
        DeclareLaunchArgument("namespace", default_value="pose2rgbd", description="namespace of both nodes"),
        DeclareLaunchArgument(
            "world_frame", default_value="", description="TF world frame of the poses (empty: the models' own)"
        ),
        DeclareLaunchArgument("camera_frame", default_value="camera_optical_frame", description="camera optical frame"),
        DeclareLaunchArgument("rate", default_value="10.0", description="render rate in Hz"),
        DeclareLaunchArgument("device", default_value="auto", description="torch device: auto, cpu, cuda, cuda:N"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag playback)"),
        DeclareLaunchArgument(
            "gps_topic",
            default_value="/gps/fix",
            description="the robot's NavSatFix: the record node's GPS, and the render node's check of the model's "
            "place (each launch file's gps_topic)",
        ),
        DeclareLaunchArgument(
            "render_params_file",
            default_value=PathJoinSubstitution([share, "config", "render.yaml"]),
            description="parameters of the render node",
        ),
        DeclareLaunchArgument(
            "record_params_file",
            default_value=PathJoinSubstitution([share, "config", "record.yaml"]),
            description="parameters of the record node",
        ),
        DeclareLaunchArgument(
            "localize_checkpoint",
            default_value="",
            description="image -> pose checkpoint (.pt) for the localize node (empty: no localize node)",
        ),
        DeclareLaunchArgument(
            "covariance_file",
            default_value="",
            description="localize node: calibration YAML of `pose2rgbd localize calibrate` (empty: default)",
        ),
        DeclareLaunchArgument(
            "image_topic", default_value="/camera/image_raw", description="camera images for the localize node"
        ),
        DeclareLaunchArgument(
            "fastdds_profile",
            default_value=EnvironmentVariable(
                "FASTRTPS_DEFAULT_PROFILES_FILE",
                default_value=PathJoinSubstitution([share, "config", "fastdds_large_images.xml"]),
            ),
            description="Fast DDS profile of the render node's process (render.launch.py's fastdds_profile)",
        ),
        DeclareLaunchArgument(
            "localize_params_file",
            default_value=PathJoinSubstitution([share, "config", "localize.yaml"]),
            description="parameters of the localize node",
        ),
    ]

    def include(name: str, **launch_args: LaunchConfiguration) -> IncludeLaunchDescription:
        return IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", name])),
            launch_arguments=list(launch_args.items()),
        )

    c = LaunchConfiguration
    render = include(
        "render.launch.py",
        checkpoint=c("checkpoint"),
        params_file=c("render_params_file"),
        namespace=c("namespace"),
        world_frame=c("world_frame"),
        camera_frame=c("camera_frame"),
        rate=c("rate"),
        device=c("device"),
        use_sim_time=c("use_sim_time"),
        gps_topic=c("gps_topic"),
        fastdds_profile=c("fastdds_profile"),
    )
    record = include(
        "record.launch.py",
        dataset=c("dataset"),
        params_file=c("record_params_file"),
        namespace=c("namespace"),
        gps_topic=c("gps_topic"),
        camera_frame=c("camera_frame"),
        use_sim_time=c("use_sim_time"),
    )
    localize = include(
        "localize.launch.py",
        checkpoint=c("localize_checkpoint"),
        params_file=c("localize_params_file"),
        namespace=c("namespace"),
        image_topic=c("image_topic"),
        world_frame=c("world_frame"),
        covariance_file=c("covariance_file"),
        device=c("device"),
        use_sim_time=c("use_sim_time"),
    )
    with_localizer = IfCondition(PythonExpression(["'", c("localize_checkpoint"), "' != ''"]))
    return LaunchDescription([*args, render, record, GroupAction([localize], condition=with_localizer)])
